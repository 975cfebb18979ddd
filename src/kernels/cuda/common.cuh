// Shared pieces of the CUDA kernels: launch geometry, warp and block reductions, and the
// storage-type loads/stores (core/half.h's conversions are TS_HD, so device code rounds to bf16
// and f16 exactly like the CPU kernels do).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/half.h"
#include "cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace tessera::cuda {

constexpr int kThreads = 256;  // threads per block for element-wise and row kernels
constexpr int kWarp = 32;

// Blocks for a grid-stride loop over n elements: enough to fill the GPU several times over
// (132 SMs x 8 resident blocks on an H100/H200), never more than the elements need.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = 132 * 16;
  return unsigned(want < 1 ? 1 : (want < cap ? want : cap));
}

// for (i = global thread; i < n; i += all threads)
#define TS_GRID_STRIDE(i, n)                                                \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)

__device__ inline float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline double warp_sum(double v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum (or max) of v over the block, returned to every thread. `scratch` holds one value per
// warp (32 suffice for 1024 threads). Starts and ends with a barrier so that back-to-back calls
// may share one scratch array.
template <class V>
__device__ inline V block_sum(V v, V* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  V t = lane < warps ? scratch[lane] : V(0);
  return warp_sum(t);
}

__device__ inline float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : -__int_as_float(0x7f800000);
  return warp_max(t);
}

// Loads and stores of the storage types, f32 in registers.
__device__ inline float ld(const float* p, int64_t i) {
  return p[i];
}
__device__ inline float ld(const bf16* p, int64_t i) {
  return bf16_to_float(p[i]);
}
__device__ inline float ld(const f16* p, int64_t i) {
  return f16_to_float(p[i]);
}
template <class T>
__device__ inline void st(T* p, int64_t i, float v) {
  p[i] = from_f32<T>(v);
}

}  // namespace tessera::cuda
