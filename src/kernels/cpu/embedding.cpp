#include "kernels/cpu/embedding.h"
#include "core/error.h"
#include "core/profiler.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {

template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C) {
  prof::Scope prof_scope(prof::Family::embed_loss, "embedding_forward");
#pragma omp parallel for schedule(static) if (n * C > kParallelGrain)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(y + i * C, w + int64_t(ids[i]) * C, size_t(C) * sizeof(T));
}

void embedding_backward(const float* gy, const int32_t* ids, float* dw, int64_t n, int64_t V,
                        int64_t C, bool accumulate) {
  prof::Scope prof_scope(prof::Family::embed_loss, "embedding_backward");
  if (!accumulate) {
#pragma omp parallel for schedule(static) if (V * C > kParallelGrain)
    for (int64_t v = 0; v < V; ++v) std::memset(dw + v * C, 0, size_t(C) * sizeof(float));
  }
#pragma omp parallel if (n * C > kParallelGrain)
  {
    // Each thread owns one contiguous range of columns (multiples of 16 floats: whole cache
    // lines) of every row, so no two threads ever touch the same dw element.
    const int64_t nt = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t width = ((C + nt - 1) / nt + 15) / 16 * 16;
    const int64_t c0 = std::min(C, me * width), c1 = std::min(C, c0 + width);
    for (int64_t i = 0; i < n && c0 < c1; ++i) {
      float* d = dw + int64_t(ids[i]) * C;
      const float* g = gy + i * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
}

IdGroups group_ids(const int32_t* ids, int64_t n, int64_t V) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  TS_CHECK(n >= 0 && n <= kMax && V >= 0 && V <= kMax,
           "embedding: grouping {} ids over {} rows: expected both counts in [0, 2^31)", n, V);
  // count[v] = occurrences of v, then each row's first slot in the position order.
  std::vector<int32_t> count(size_t(V), 0);
  for (int64_t i = 0; i < n; ++i) {
    TS_CHECK(ids[i] >= 0 && ids[i] < V,
             "embedding: id {} at position {} is out of range: expected 0 <= id < {} (V)", ids[i],
             i, V);
    ++count[size_t(ids[i])];
  }
  IdGroups g;
  g.n = n;
  for (int64_t v = 0; v < V; ++v) g.count += count[size_t(v)] > 0;
  g.packed.assign(size_t(2 * g.count + 1 + n), 0);
  int32_t* offsets = g.packed.data();
  int32_t* rows = offsets + g.count + 1;
  int32_t* positions = rows + g.count;
  int64_t k = 0, at = 0;
  for (int64_t v = 0; v < V; ++v) {
    const int32_t c = count[size_t(v)];
    if (c == 0) continue;
    offsets[k] = int32_t(at);
    rows[k] = int32_t(v);
    count[size_t(v)] = int32_t(at);  // from here on: the next free slot of row v
    at += c, ++k;
  }
  offsets[g.count] = int32_t(n);
  // Positions visited in increasing order, each appended to its row's slots: stable.
  for (int64_t i = 0; i < n; ++i) positions[count[size_t(ids[i])]++] = int32_t(i);
  return g;
}

#define TS_INSTANTIATE(T) \
  template void embedding_forward<T>(const T*, const int32_t*, T*, int64_t, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cpu
