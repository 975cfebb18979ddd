#include "kernels/cuda/norm.h"

#include "cuda/allocator.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

constexpr int kNormThreads = 256;

// One block per row. Two passes for the statistics like the CPU kernel (mean, then squared
// deviations: no E[x^2] - E[x]^2 cancellation); the row is re-read from L1/L2, not DRAM.
// rms (kRms) skips the mean and the bias.
template <class T, bool kRms>
__global__ void norm_forward_kernel(const T* x, const float* w, const float* b, T* y, float* mean,
                                    float* rstd, int64_t C, float eps) {
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  T* yr = y + r * C;
  const float inv_c = 1.f / float(C);
  float m = 0.f;
  if (!kRms) {
    float s = 0.f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += ld(xr, c);
    m = block_sum(s, scratch) * inv_c;
  }
  float v = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = ld(xr, c) - m;
    v += d * d;
  }
  const float rs = 1.f / sqrtf(block_sum(v, scratch) * inv_c + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float wc = w ? w[c] : 1.f, bc = (!kRms && b) ? b[c] : 0.f;
    st(yr, c, (ld(xr, c) - m) * rs * wc + bc);
  }
  if (threadIdx.x == 0) {
    if (!kRms) mean[r] = m;
    rstd[r] = rs;
  }
}

// gx for one row per block:
//   LayerNorm: rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = gy * w
//   RMSNorm:   rstd * (g - xhat * mean(g * xhat)),            xhat = x * rstd
template <class T, bool kRms>
__global__ void norm_backward_input_kernel(const T* x, const float* w, const float* mean,
                                           const float* rstd, const float* gy, T* gx, int64_t C) {
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  const float* gr = gy + r * C;
  const float m = kRms ? 0.f : mean[r], rs = rstd[r];
  const float inv_c = 1.f / float(C);
  float s1 = 0.f, s2 = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float g = gr[c] * (w ? w[c] : 1.f);
    s1 += g;
    s2 += g * (ld(xr, c) - m) * rs;
  }
  const float a = kRms ? 0.f : block_sum(s1, scratch) * inv_c;
  const float bb = block_sum(s2, scratch) * inv_c;
  T* gxr = gx + r * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float xh = (ld(xr, c) - m) * rs;
    st(gxr, c, rs * (gr[c] * (w ? w[c] : 1.f) - a - xh * bb));
  }
}

// Parameter-gradient partials: block (bx, by) sums rows [by * chunk, +chunk) of columns
// [bx * 32, +32), 8 warps striding over the rows, into part_w / part_b [chunks, C].
constexpr int kColTile = 32, kRowWarps = 8;

template <class T, bool kRms>
__global__ void norm_param_partial_kernel(const T* x, const float* mean, const float* rstd,
                                          const float* gy, float* part_w, float* part_b,
                                          int64_t rows, int64_t C, int64_t chunk) {
  __shared__ float sw[kRowWarps][kColTile + 1], sb[kRowWarps][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * chunk;
  const int64_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
  float aw = 0.f, ab = 0.f;
  if (c < C) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowWarps) {
      const float g = gy[r * C + c];
      const float m = kRms ? 0.f : mean[r];
      aw += g * (ld(x, r * C + c) - m) * rstd[r];
      ab += g;
    }
  }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float tw = 0.f, tb = 0.f;
    for (int k = 0; k < kRowWarps; ++k) tw += sw[k][threadIdx.x], tb += sb[k][threadIdx.x];
    part_w[int64_t(blockIdx.y) * C + c] = tw;
    if (part_b) part_b[int64_t(blockIdx.y) * C + c] = tb;
  }
}

// dst[c] = sum over chunks k (in order) of part[k * C + c].
__global__ void sum_chunks_kernel(const float* part, int64_t chunks, int64_t C, float* dst) {
  TS_GRID_STRIDE(c, C) {
    float s = 0.f;
    for (int64_t k = 0; k < chunks; ++k) s += part[k * C + c];
    dst[c] = s;
  }
}

template <class T, bool kRms>
void param_grads(const T* x, const float* mean, const float* rstd, const float* gy, float* dw,
                 float* db, int64_t rows, int64_t C, cudaStream_t s) {
  if (!dw && !db) return;
  // ~128 row chunks: enough blocks to fill the GPU at GPT-2 sizes, few partials to add.
  const int64_t chunk = rows < 128 * 16 ? 16 : (rows + 127) / 128;
  const int64_t chunks = (rows + chunk - 1) / chunk;
  const size_t bytes = size_t(2 * chunks * C) * sizeof(float);
  DeviceCachingAllocator& alloc = device_allocator();
  auto* part = static_cast<float*>(alloc.allocate_on(bytes, s));
  float* part_b = (!kRms && db) ? part + chunks * C : nullptr;
  const dim3 grid(unsigned((C + kColTile - 1) / kColTile), unsigned(chunks));
  launch<norm_param_partial_kernel<T, kRms>>(grid, dim3(kColTile, kRowWarps), 0, s, x, mean, rstd,
                                             gy, part, part_b, rows, C, chunk);
  CUDA_CHECK_LAUNCH();
  if (dw) {
    launch<sum_chunks_kernel>(grid_for(C), kThreads, 0, s, part, chunks, C, dw);
    CUDA_CHECK_LAUNCH();
  }
  if (part_b) {
    launch<sum_chunks_kernel>(grid_for(C), kThreads, 0, s, part_b, chunks, C, db);
    CUDA_CHECK_LAUNCH();
  }
  alloc.release(part, bytes);  // stream-ordered: reuse on s waits behind these kernels
}

}  // namespace

template <class T>
void layer_norm_forward(const T* x, const float* w, const float* b, T* y, float* mean, float* rstd,
                        int64_t rows, int64_t C, float eps, cudaStream_t s) {
  if (rows <= 0) return;
  launch<norm_forward_kernel<T, false>>(unsigned(rows), kNormThreads, 0, s, x, w, b, y, mean, rstd,
                                        C, eps);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void layer_norm_backward(const T* x, const float* w, const float* mean, const float* rstd,
                         const float* gy, T* gx, float* dw, float* db, int64_t rows, int64_t C,
                         cudaStream_t s) {
  if (rows <= 0) {
    if (dw) CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(C) * 4, s));
    if (db) CUDA_CHECK(cudaMemsetAsync(db, 0, size_t(C) * 4, s));
    return;
  }
  if (gx) {
    launch<norm_backward_input_kernel<T, false>>(unsigned(rows), kNormThreads, 0, s, x, w, mean,
                                                 rstd, gy, gx, C);
    CUDA_CHECK_LAUNCH();
  }
  if (dw || db) {
    // dw only: the partial kernel still computes the bias sums (cheap), db gets them or not.
    param_grads<T, false>(x, mean, rstd, gy, dw, db, rows, C, s);
  }
}

template <class T>
void rms_norm_forward(const T* x, const float* w, T* y, float* rstd, int64_t rows, int64_t C,
                      float eps, cudaStream_t s) {
  if (rows <= 0) return;
  launch<norm_forward_kernel<T, true>>(unsigned(rows), kNormThreads, 0, s, x, w, nullptr, y,
                                       nullptr, rstd, C, eps);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void rms_norm_backward(const T* x, const float* w, const float* rstd, const float* gy, T* gx,
                       float* dw, int64_t rows, int64_t C, cudaStream_t s) {
  if (rows <= 0) {
    if (dw) CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(C) * 4, s));
    return;
  }
  if (gx) {
    launch<norm_backward_input_kernel<T, true>>(unsigned(rows), kNormThreads, 0, s, x, w, nullptr,
                                                rstd, gy, gx, C);
    CUDA_CHECK_LAUNCH();
  }
  if (dw) param_grads<T, true>(x, nullptr, rstd, gy, dw, nullptr, rows, C, s);
}

#define TS_INSTANTIATE(T)                                                                        \
  template void layer_norm_forward<T>(const T*, const float*, const float*, T*, float*, float*,  \
                                      int64_t, int64_t, float, cudaStream_t);                    \
  template void layer_norm_backward<T>(const T*, const float*, const float*, const float*,       \
                                       const float*, T*, float*, float*, int64_t, int64_t,       \
                                       cudaStream_t);                                            \
  template void rms_norm_forward<T>(const T*, const float*, T*, float*, int64_t, int64_t, float, \
                                    cudaStream_t);                                               \
  template void rms_norm_backward<T>(const T*, const float*, const float*, const float*, T*,     \
                                     float*, int64_t, int64_t, cudaStream_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda
