// Column sums of a [rows, cols] buffer, reproducibly and in parallel: fixed blocks of kBlock
// rows are each summed in row order into a partial row (a thread streams whole contiguous rows),
// then the partials are added to the result in block order. The grouping depends only on
// `rows`, never on the thread count, so the sums are bit-identical for any number of threads.
// The per-row work is the caller's, so one pass over the data can also write a converted copy
// (a GEMM operand) or an element-wise result while the bias gradient is summed.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {

// row(r, partial) adds row r's f32 values into partial[0, cols) (and may write elsewhere);
// y[c] += sum over rows. y may be null: then row(r, nullptr) runs for its side effects only.
template <class RowFn>
void blocked_column_sums(int64_t rows, int64_t cols, float* y, RowFn row) {
  constexpr int64_t kBlock = 32;
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  static thread_local std::vector<float> part;
  if (y) part.assign(size_t(blocks * cols), 0.f);
  float* pp = y ? part.data() : nullptr;
#pragma omp parallel for schedule(static) if (rows * cols > kParallelGrain)
  for (int64_t bl = 0; bl < blocks; ++bl) {
    float* p = pp ? pp + bl * cols : nullptr;
    const int64_t end = std::min(rows, (bl + 1) * kBlock);
    for (int64_t r = bl * kBlock; r < end; ++r) row(r, p);
  }
  if (!y) return;
#pragma omp parallel for schedule(static) if (blocks * cols > kParallelGrain)
  for (int64_t c0 = 0; c0 < cols; c0 += 64) {
    const int64_t c1 = std::min(cols, c0 + 64);
    for (int64_t bl = 0; bl < blocks; ++bl) {
      const float* p = pp + bl * cols;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) y[c] += p[c];
    }
  }
}

}  // namespace tessera::cpu
