#include "kernels/cuda/elementwise.h"

#include <algorithm>

#include "cuda/allocator.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

template <class T>
__global__ void add_kernel(const T* a, const T* b, T* y, int64_t n, int64_t nb) {
  TS_GRID_STRIDE(i, n) st(y, i, ld(a, i) + ld(b, nb == n ? i : i % nb));
}

template <class T>
__global__ void mul_kernel(const T* a, const T* b, T* y, int64_t n, int64_t nb) {
  TS_GRID_STRIDE(i, n) st(y, i, ld(a, i) * ld(b, nb == n ? i : i % nb));
}

template <class T>
__global__ void scale_kernel(const T* x, T* y, float a, int64_t n) {
  TS_GRID_STRIDE(i, n) st(y, i, a * ld(x, i));
}

// Block (bx, by): columns [bx * 32, +32) and row chunk by; each warp of 8 walks rows with stride
// 8 (coalesced 32-column reads), then the 8 warps' partial sums meet in shared memory. One
// chunk adds its sum into y; several (tall inputs, a [B*T, C] bias gradient) write their sums to
// `partial` [chunks, cols] and sum_chunks_kernel adds them into y in chunk order: no atomics, so
// the result is the same on every run (GPU training is bit-reproducible).
constexpr int kColTile = 32, kRowWarps = 8;
constexpr int64_t kMinRowsPerChunk = 256, kMaxChunks = 1024;

template <class T>
__global__ void sum_rows_kernel(const T* x, float* y, float* partial, int64_t rows, int64_t cols,
                                int64_t chunk) {
  __shared__ float part[kRowWarps][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * chunk;
  const int64_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
  float acc = 0.f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowWarps) acc += ld(x, r * cols + c);
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float s = 0.f;
    for (int w = 0; w < kRowWarps; ++w) s += part[w][threadIdx.x];
    if (partial)
      partial[int64_t(blockIdx.y) * cols + c] = s;
    else
      y[c] += s;
  }
}

__global__ void sum_chunks_kernel(const float* partial, float* y, int64_t chunks, int64_t cols) {
  TS_GRID_STRIDE(c, cols) {
    float s = 0.f;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
    y[c] += s;
  }
}

__global__ void add_inplace_kernel(float* dst, const float* src, int64_t n) {
  TS_GRID_STRIDE(i, n) dst[i] += src[i];
}

__global__ void axpy_kernel(float* y, const float* x, float a, int64_t n) {
  TS_GRID_STRIDE(i, n) y[i] += a * x[i];
}

// partial[block] = sum over the block's grid-stride elements of f(x) in f64.
template <bool kSquares>
__global__ void sum_partial_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double scratch[kWarp];
  double acc = 0;
  TS_GRID_STRIDE(i, n) {
    const double v = x[i];
    acc += kSquares ? v * v : v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// *out = the sum of the partials, or *out += it (add).
__global__ void sum_final_kernel(const double* partial, int n, double* out, bool add) {
  __shared__ double scratch[kWarp];
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *out = add ? *out + acc : acc;
}

// *out = the sum (or *out += it: add), on the device: partials per block, then one block sums
// them in order.
template <bool kSquares>
void reduce_into(const float* x, int64_t n, double* out, bool add, cudaStream_t s) {
  if (n <= 0) {
    if (!add) CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(double), s));
    return;
  }
  const unsigned blocks = grid_for(n);
  DeviceCachingAllocator& alloc = device_allocator();
  const size_t bytes = blocks * sizeof(double);
  auto* partial = static_cast<double*>(alloc.allocate_on(bytes, s));
  launch<sum_partial_kernel<kSquares>>(blocks, kThreads, 0, s, x, n, partial);
  CUDA_CHECK_LAUNCH();
  launch<sum_final_kernel>(1, kThreads, 0, s, partial, int(blocks), out, add);
  CUDA_CHECK_LAUNCH();
  alloc.release(partial, bytes);  // reused in stream order
}

template <bool kSquares>
double reduce(const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return 0.0;
  DeviceCachingAllocator& alloc = device_allocator();
  auto* sum = static_cast<double*>(alloc.allocate_on(sizeof(double), s));
  reduce_into<kSquares>(x, n, sum, false, s);
  double out = 0;
  CUDA_CHECK(cudaMemcpyAsync(&out, sum, sizeof out, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  alloc.release(sum, sizeof(double));
  return out;
}

}  // namespace

template <class T>
void add(const T* a, const T* b, T* y, int64_t n, int64_t nb, cudaStream_t s) {
  if (n <= 0) return;
  launch<add_kernel<T>>(grid_for(n), kThreads, 0, s, a, b, y, n, nb);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void mul(const T* a, const T* b, T* y, int64_t n, int64_t nb, cudaStream_t s) {
  if (n <= 0) return;
  launch<mul_kernel<T>>(grid_for(n), kThreads, 0, s, a, b, y, n, nb);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void scale(const T* x, T* y, float a, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  launch<scale_kernel<T>>(grid_for(n), kThreads, 0, s, x, y, a, n);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void sum_rows_acc(const T* x, float* y, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t chunk = std::max(kMinRowsPerChunk, (rows + kMaxChunks - 1) / kMaxChunks);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  const dim3 grid(unsigned((cols + kColTile - 1) / kColTile), unsigned(chunks));
  if (chunks == 1) {
    launch<sum_rows_kernel<T>>(grid, dim3(kColTile, kRowWarps), 0, s, x, y, nullptr, rows, cols,
                               chunk);
    CUDA_CHECK_LAUNCH();
    return;
  }
  DeviceCachingAllocator& alloc = device_allocator();
  const size_t bytes = size_t(chunks * cols) * sizeof(float);
  auto* partial = static_cast<float*>(alloc.allocate_on(bytes, s));
  launch<sum_rows_kernel<T>>(grid, dim3(kColTile, kRowWarps), 0, s, x, y, partial, rows, cols,
                             chunk);
  CUDA_CHECK_LAUNCH();
  launch<sum_chunks_kernel>(grid_for(cols), kThreads, 0, s, partial, y, chunks, cols);
  CUDA_CHECK_LAUNCH();
  alloc.release(partial, bytes);  // reused in stream order: later work on s runs after the sum
}

void add_inplace(float* dst, const float* src, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  launch<add_inplace_kernel>(grid_for(n), kThreads, 0, s, dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void axpy(float* y, const float* x, float a, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  launch<axpy_kernel>(grid_for(n), kThreads, 0, s, y, x, a, n);
  CUDA_CHECK_LAUNCH();
}

double sum(const float* x, int64_t n, cudaStream_t s) {
  return reduce<false>(x, n, s);
}
double sum_squares(const float* x, int64_t n, cudaStream_t s) {
  return reduce<true>(x, n, s);
}
void sum_squares_into(const float* x, int64_t n, double* out, cudaStream_t s) {
  reduce_into<true>(x, n, out, true, s);
}

#define TS_INSTANTIATE(T)                                                       \
  template void add<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t); \
  template void mul<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t); \
  template void scale<T>(const T*, T*, float, int64_t, cudaStream_t);           \
  template void sum_rows_acc<T>(const T*, float*, int64_t, int64_t, cudaStream_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda
