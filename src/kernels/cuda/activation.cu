#include "kernels/cuda/activation.h"

#include "kernels/common/activation_math.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

// The activation is a kernel argument, not a template parameter: the branch is uniform across
// the grid (free next to the memory traffic) and it saves compiling 3x the kernels.
__device__ inline float act_value(kernels::Activation a, float x) {
  switch (a) {
    case kernels::Activation::gelu:
      return math::gelu_tanh(x);
    case kernels::Activation::silu:
      return math::silu(x);
    case kernels::Activation::relu:
      return math::relu(x);
  }
  return x;
}

__device__ inline float act_grad(kernels::Activation a, float x) {
  switch (a) {
    case kernels::Activation::gelu:
      return math::gelu_tanh_grad(x);
    case kernels::Activation::silu:
      return math::silu_grad(x);
    case kernels::Activation::relu:
      return math::relu_grad(x);
  }
  return 1.f;
}

template <class T>
__global__ void forward_kernel(kernels::Activation a, const T* x, T* y, int64_t n) {
  TS_GRID_STRIDE(i, n) st(y, i, act_value(a, ld(x, i)));
}

template <class T>
__global__ void backward_kernel(kernels::Activation a, const T* x, const float* gy, T* gx,
                                int64_t n) {
  TS_GRID_STRIDE(i, n) st(gx, i, gy[i] * act_grad(a, ld(x, i)));
}

}  // namespace

template <class T>
void activation_forward(kernels::Activation act, const T* x, T* y, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  launch<forward_kernel<T>>(grid_for(n), kThreads, 0, s, act, x, y, n);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void activation_backward(kernels::Activation act, const T* x, const float* gy, T* gx, int64_t n,
                         cudaStream_t s) {
  if (n <= 0) return;
  launch<backward_kernel<T>>(grid_for(n), kThreads, 0, s, act, x, gy, gx, n);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE(T)                                                                        \
  template void activation_forward<T>(kernels::Activation, const T*, T*, int64_t, cudaStream_t); \
  template void activation_backward<T>(kernels::Activation, const T*, const float*, T*, int64_t, \
                                       cudaStream_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda
