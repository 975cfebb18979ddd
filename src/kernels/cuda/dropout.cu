#include "kernels/cuda/dropout.h"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/counter_rng.cuh"

namespace tessera::cuda {
namespace {

template <class In, class Out>
__global__ void mask_kernel(const In* x, Out* y, int64_t n, float p, float keep_scale,
                            uint64_t seed, uint64_t offset) {
  TS_GRID_STRIDE(i, n) {
    const bool keep = rng::counter_uniform01(seed, offset + uint64_t(i)) >= p;
    st(y, i, keep ? ld(x, i) * keep_scale : 0.f);
  }
}

template <class In, class Out>
void apply_mask(const In* x, Out* y, int64_t n, float p, uint64_t seed, uint64_t offset,
                cudaStream_t s) {
  if (n <= 0) return;
  launch<mask_kernel<In, Out>>(grid_for(n), kThreads, 0, s, x, y, n, p, 1.f / (1.f - p), seed,
                               offset);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

template <class T>
void dropout_forward(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset,
                     cudaStream_t s) {
  apply_mask(x, y, n, p, seed, offset, s);
}

template <class T>
void dropout_backward(const float* gy, T* gx, int64_t n, float p, uint64_t seed, uint64_t offset,
                      cudaStream_t s) {
  apply_mask(gy, gx, n, p, seed, offset, s);
}

#define TS_INSTANTIATE(T)                                                                 \
  template void dropout_forward<T>(const T*, T*, int64_t, float, uint64_t, uint64_t,      \
                                   cudaStream_t);                                         \
  template void dropout_backward<T>(const float*, T*, int64_t, float, uint64_t, uint64_t, \
                                    cudaStream_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda
