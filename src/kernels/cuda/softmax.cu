#include "kernels/cuda/softmax.h"

#include "cuda/allocator.h"
#include "kernels/common/activation_math.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

constexpr int kRowThreads = 256;

template <class T>
__device__ float row_max(const T* xr, int64_t C, float* scratch) {
  float m = -__int_as_float(0x7f800000);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) m = fmaxf(m, ld(xr, c));
  return block_max(m, scratch);
}

template <class T>
__global__ void softmax_forward_kernel(const T* x, T* y, int64_t C) {
  __shared__ float scratch[kWarp];
  const T* xr = x + int64_t(blockIdx.x) * C;
  T* yr = y + int64_t(blockIdx.x) * C;
  const float m = row_max(xr, C, scratch);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += math::exp_f32(ld(xr, c) - m);
  const float inv = 1.f / block_sum(s, scratch);
  // Recompute the exps rather than store them: one more read of a row that sits in L1/L2,
  // and no rounding of the unnormalised values to T.
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    st(yr, c, math::exp_f32(ld(xr, c) - m) * inv);
}

template <class T>
__global__ void softmax_backward_kernel(const T* y, const float* gy, T* gx, int64_t C) {
  __shared__ float scratch[kWarp];
  const int64_t off = int64_t(blockIdx.x) * C;
  float dot = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += gy[off + c] * ld(y, off + c);
  dot = block_sum(dot, scratch);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    st(gx, off + c, ld(y, off + c) * (gy[off + c] - dot));
}

template <class T>
__global__ void ce_forward_kernel(const T* logits, const int32_t* targets, float* lse,
                                  float* row_loss, int64_t V, int32_t ignore_index) {
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x;
  const int32_t t = targets[r];
  if (t == ignore_index) {  // uniform over the block: no thread reaches a barrier below
    if (threadIdx.x == 0) lse[r] = 0.f, row_loss[r] = 0.f;
    return;
  }
  const T* xr = logits + r * V;
  const float m = row_max(xr, V, scratch);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) s += math::exp_f32(ld(xr, c) - m);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    const float l = m + logf(s);
    lse[r] = l;
    row_loss[r] = l - ld(xr, t);
  }
}

// Sums the counted rows' losses in row order (f64), one block: thread k takes a contiguous
// slice of rows, then the slices' sums meet in a fixed tree. Deterministic for a given rows.
// The mean is taken in f64 and rounded once, as the CPU op does.
__global__ void ce_mean_kernel(const float* row_loss, const int32_t* targets, int64_t rows,
                               int32_t ignore_index, float* loss) {
  __shared__ double scratch[kWarp];
  const int64_t per = (rows + blockDim.x - 1) / blockDim.x;
  const int64_t r0 = threadIdx.x * per, r1 = r0 + per < rows ? r0 + per : rows;
  double acc = 0, cnt = 0;
  for (int64_t r = r0; r < r1; ++r) {
    if (targets[r] == ignore_index) continue;
    acc += double(row_loss[r]);
    cnt += 1;
  }
  acc = block_sum(acc, scratch);
  cnt = block_sum(cnt, scratch);
  if (threadIdx.x == 0) loss[0] = cnt > 0 ? float(acc / cnt) : 0.f;  // counts are exact in f64
}

template <class T>
__global__ void ce_backward_kernel(const float* logits, const int32_t* targets, const float* lse,
                                   const float* g, int64_t count, T* gx, int64_t V,
                                   int32_t ignore_index) {
  const float scale = count ? g[0] / float(count) : 0.f;
  const int64_t r = blockIdx.x;
  const int32_t t = targets[r];
  const float* xr = logits + r * V;
  T* gr = gx + r * V;
  const bool ignored = t == ignore_index;
  const float l = lse[r];
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
    float g = 0.f;
    if (!ignored) g = scale * math::exp_f32(ld(xr, c) - l) - (c == t ? scale : 0.f);
    st(gr, c, g);
  }
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t C, cudaStream_t s) {
  if (rows <= 0) return;
  launch<softmax_forward_kernel<T>>(unsigned(rows), kRowThreads, 0, s, x, y, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void softmax_backward(const T* y, const float* gy, T* gx, int64_t rows, int64_t C, cudaStream_t s) {
  if (rows <= 0) return;
  launch<softmax_backward_kernel<T>>(unsigned(rows), kRowThreads, 0, s, y, gy, gx, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, float* lse, float* loss,
                           int64_t rows, int64_t V, int32_t ignore_index, cudaStream_t s) {
  const size_t bytes = size_t(rows > 0 ? rows : 1) * sizeof(float);
  DeviceCachingAllocator& alloc = device_allocator();
  auto* row_loss = static_cast<float*>(alloc.allocate_on(bytes, s));
  if (rows > 0) {
    launch<ce_forward_kernel<T>>(unsigned(rows), kRowThreads, 0, s, logits, targets, lse, row_loss,
                                 V, ignore_index);
    CUDA_CHECK_LAUNCH();
  }
  masked_row_mean(row_loss, targets, rows, ignore_index, loss, s);
  alloc.release(row_loss, bytes);  // stream-ordered: reused on s only after these kernels
}

void masked_row_mean(const float* row_loss, const int32_t* targets, int64_t rows,
                     int32_t ignore_index, float* loss, cudaStream_t s) {
  launch<ce_mean_kernel>(1, 1024, 0, s, row_loss, targets, rows, ignore_index, loss);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* g, int64_t count, T* gx, int64_t rows, int64_t V,
                            int32_t ignore_index, cudaStream_t s) {
  if (rows <= 0) return;
  launch<ce_backward_kernel<T>>(unsigned(rows), kRowThreads, 0, s, logits, targets, lse, g, count,
                                gx, V, ignore_index);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE(T)                                                                        \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t, cudaStream_t);                \
  template void softmax_backward<T>(const T*, const float*, T*, int64_t, int64_t, cudaStream_t); \
  template void cross_entropy_forward<T>(const T*, const int32_t*, float*, float*, int64_t,      \
                                         int64_t, int32_t, cudaStream_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE
template void cross_entropy_backward<float>(const float*, const int32_t*, const float*,
                                            const float*, int64_t, float*, int64_t, int64_t,
                                            int32_t, cudaStream_t);
template void cross_entropy_backward<bf16>(const float*, const int32_t*, const float*, const float*,
                                           int64_t, bf16*, int64_t, int64_t, int32_t, cudaStream_t);

}  // namespace tessera::cuda
