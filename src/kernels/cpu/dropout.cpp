#include "kernels/cpu/dropout.h"

#include "core/rng.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {
namespace {

template <class In, class Out>
void apply_mask(const In* x, Out* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
  const float keep_scale = 1.f / (1.f - p);
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = Generator::uniform01(seed, offset + uint64_t(i)) >= p;
    y[i] = from_f32<Out>(keep ? to_f32(x[i]) * keep_scale : 0.f);
  }
}

}  // namespace

template <class T>
void dropout_forward(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
  apply_mask(x, y, n, p, seed, offset);
}

template <class T>
void dropout_backward(const float* gy, T* gx, int64_t n, float p, uint64_t seed, uint64_t offset) {
  apply_mask(gy, gx, n, p, seed, offset);
}

#define TS_INSTANTIATE(T)                                                             \
  template void dropout_forward<T>(const T*, T*, int64_t, float, uint64_t, uint64_t); \
  template void dropout_backward<T>(const float*, T*, int64_t, float, uint64_t, uint64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cpu
