// One thread per output element (row r, column j): it reads gate x[r, j] and up x[r, F + j].
#include "kernels/cuda/swiglu.h"

#include "kernels/common/activation_math.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

template <class TI, class TO>
__global__ void forward_kernel(const TI* x, TO* y, int64_t F, int64_t n) {
  TS_GRID_STRIDE(i, n) {
    const int64_t gate = i / F * 2 * F + i % F;
    st(y, i, math::silu(ld(x, gate)) * ld(x, gate + F));
  }
}

template <class T>
__global__ void backward_kernel(const T* x, const float* gy, T* gx, int64_t F, int64_t n) {
  TS_GRID_STRIDE(i, n) {
    const int64_t gate = i / F * 2 * F + i % F;
    const float a = ld(x, gate);
    st(gx, gate, gy[i] * ld(x, gate + F) * math::silu_grad(a));
    st(gx, gate + F, gy[i] * math::silu(a));
  }
}

}  // namespace

template <class TI, class TO>
void swiglu_forward(const TI* x, TO* y, int64_t rows, int64_t F, cudaStream_t s) {
  const int64_t n = rows * F;
  if (n <= 0) return;
  launch<forward_kernel<TI, TO>>(grid_for(n), kThreads, 0, s, x, y, F, n);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void swiglu_backward(const T* x, const float* gy, T* gx, int64_t rows, int64_t F, cudaStream_t s) {
  const int64_t n = rows * F;
  if (n <= 0) return;
  launch<backward_kernel<T>>(grid_for(n), kThreads, 0, s, x, gy, gx, F, n);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE_FORWARD(TI, TO) \
  template void swiglu_forward<TI, TO>(const TI*, TO*, int64_t, int64_t, cudaStream_t);
#define TS_INSTANTIATE(T)          \
  TS_INSTANTIATE_FORWARD(T, float) \
  TS_INSTANTIATE_FORWARD(T, bf16)  \
  TS_INSTANTIATE_FORWARD(T, f16)   \
  template void swiglu_backward<T>(const T*, const float*, T*, int64_t, int64_t, cudaStream_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE
#undef TS_INSTANTIATE_FORWARD

}  // namespace tessera::cuda
