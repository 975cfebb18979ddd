#include "kernels/cpu/embedding.h"
#include "core/profiler.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/common/id_groups.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {

template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C) {
  prof::Scope prof_scope(prof::Family::embed_loss, "embedding_forward");
#pragma omp parallel for schedule(static) if (n * C > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] == kernels::kSkippedId)
      std::memset(y + i * C, 0, size_t(C) * sizeof(T));
    else
      std::memcpy(y + i * C, w + int64_t(ids[i]) * C, size_t(C) * sizeof(T));
  }
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
      if (ids[i] == kernels::kSkippedId) continue;
      float* d = dw + int64_t(ids[i]) * C;
      const float* g = gy + i * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
}

#define TS_INSTANTIATE(T) \
  template void embedding_forward<T>(const T*, const int32_t*, T*, int64_t, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cpu
