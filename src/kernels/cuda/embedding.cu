#include "kernels/cuda/embedding.h"

#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

// One block per id row, threads across the columns: coalesced reads and writes.
template <class T>
__global__ void embedding_forward_kernel(const T* w, const int32_t* ids, T* y, int64_t C) {
  const int64_t i = blockIdx.x;
  const T* src = w + int64_t(ids[i]) * C;
  T* dst = y + i * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

__global__ void embedding_backward_kernel(const float* gy, const int32_t* ids, float* dw,
                                          int64_t C) {
  const int64_t i = blockIdx.x;
  float* dst = dw + int64_t(ids[i]) * C;
  const float* g = gy + i * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, g[c]);
}

}  // namespace

template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C, cudaStream_t s) {
  if (n <= 0) return;
  embedding_forward_kernel<<<unsigned(n), kThreads, 0, s>>>(w, ids, y, C);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(const float* gy, const int32_t* ids, float* dw, int64_t n, int64_t V,
                        int64_t C, cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(V * C) * sizeof(float), s));
  if (n <= 0) return;
  embedding_backward_kernel<<<unsigned(n), kThreads, 0, s>>>(gy, ids, dw, C);
  CUDA_CHECK_LAUNCH();
}

template void embedding_forward<float>(const float*, const int32_t*, float*, int64_t, int64_t,
                                       cudaStream_t);
template void embedding_forward<bf16>(const bf16*, const int32_t*, bf16*, int64_t, int64_t,
                                      cudaStream_t);
template void embedding_forward<f16>(const f16*, const int32_t*, f16*, int64_t, int64_t,
                                     cudaStream_t);

}  // namespace tessera::cuda
