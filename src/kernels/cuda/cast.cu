// One kernel for every (source, destination) pair: the dtype switch inside is uniform across
// the grid, so it costs a few instructions per element and saves compiling 36 kernels.
#include "kernels/cuda/cast.h"

#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

__device__ inline bool is_int(DType t) {
  return t == DType::i32 || t == DType::i64 || t == DType::u16;
}

__device__ inline float load_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(p)[i];
    case DType::bf16:
      return bf16_to_float(static_cast<const bf16*>(p)[i]);
    case DType::f16:
      return f16_to_float(static_cast<const f16*>(p)[i]);
    case DType::i32:
      return float(static_cast<const int32_t*>(p)[i]);
    case DType::i64:
      return float(static_cast<const int64_t*>(p)[i]);
    case DType::u16:
      return float(static_cast<const uint16_t*>(p)[i]);
  }
  return 0.f;
}

__device__ inline int64_t load_int(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::i32:
      return static_cast<const int32_t*>(p)[i];
    case DType::i64:
      return static_cast<const int64_t*>(p)[i];
    case DType::u16:
      return static_cast<const uint16_t*>(p)[i];
    default:
      return int64_t(load_float(p, t, i));
  }
}

__device__ inline void store_float(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::f32:
      static_cast<float*>(p)[i] = v;
      return;
    case DType::bf16:
      static_cast<bf16*>(p)[i] = float_to_bf16(v);
      return;
    case DType::f16:
      static_cast<f16*>(p)[i] = float_to_f16(v);
      return;
    case DType::i32:
      static_cast<int32_t*>(p)[i] = int32_t(v);
      return;
    case DType::i64:
      static_cast<int64_t*>(p)[i] = int64_t(v);
      return;
    case DType::u16:
      static_cast<uint16_t*>(p)[i] = uint16_t(v);
      return;
  }
}

__device__ inline void store_int(void* p, DType t, int64_t i, int64_t v) {
  switch (t) {
    case DType::i32:
      static_cast<int32_t*>(p)[i] = int32_t(v);
      return;
    case DType::i64:
      static_cast<int64_t*>(p)[i] = v;
      return;
    case DType::u16:
      static_cast<uint16_t*>(p)[i] = uint16_t(v);
      return;
    default:
      store_float(p, t, i, float(v));
      return;
  }
}

__global__ void cast_kernel(const void* src, DType st, void* dst, DType dt, int64_t n) {
  // Integer to integer goes through int64 (exact); anything with a float side through f32,
  // as the CPU kernel does.
  const bool ints = is_int(st) && is_int(dt);
  TS_GRID_STRIDE(i, n) {
    if (ints)
      store_int(dst, dt, i, load_int(src, st, i));
    else
      store_float(dst, dt, i, load_float(src, st, i));
  }
}

__global__ void fill_kernel(void* dst, DType t, float fv, int64_t iv, int64_t n) {
  const bool ints = is_int(t);
  TS_GRID_STRIDE(i, n) {
    if (ints)
      store_int(dst, t, i, iv);
    else
      store_float(dst, t, i, fv);
  }
}

}  // namespace

void cast(const void* src, DType src_type, void* dst, DType dst_type, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  if (src_type == dst_type) {
    CUDA_CHECK(
        cudaMemcpyAsync(dst, src, size_t(n) * dtype_size(src_type), cudaMemcpyDeviceToDevice, s));
    return;
  }
  launch<cast_kernel>(grid_for(n), kThreads, 0, s, src, src_type, dst, dst_type, n);
  CUDA_CHECK_LAUNCH();
}

void fill(void* dst, DType type, double value, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  if (value == 0.0) {
    CUDA_CHECK(cudaMemsetAsync(dst, 0, size_t(n) * dtype_size(type), s));
    return;
  }
  launch<fill_kernel>(grid_for(n), kThreads, 0, s, dst, type, float(value), int64_t(value), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
