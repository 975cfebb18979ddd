#include "kernels/cuda/sharded_cross_entropy.h"

#include "cuda/allocator.h"
#include "kernels/common/activation_math.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/softmax.h"

namespace tessera::cuda {
namespace {

constexpr int kRowThreads = 256;

__device__ inline float minus_inf() {
  return -__int_as_float(0x7f800000);
}

__device__ inline bool holds(int32_t target, int64_t first_id, int64_t V) {
  return target >= first_id && target < first_id + V;
}

// One block per row.
__global__ void stats_kernel(const float* logits, const int32_t* targets, float* stats,
                             int64_t rows, int64_t V, int64_t first_id, int32_t ignore_index) {
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x;
  const int32_t t = targets[r];
  if (t == ignore_index) {  // uniform over the block: no thread reaches a barrier below
    if (threadIdx.x == 0) stats[r] = 0.f, stats[rows + r] = 0.f;
    return;
  }
  const float* xr = logits + r * V;
  float m = minus_inf();
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) m = fmaxf(m, xr[c]);
  m = block_max(m, scratch);
  float s = 0.f;
  if (m != minus_inf())
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) s += math::exp_f32(xr[c] - m);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    stats[r] = m == minus_inf() ? m : m + logf(s);
    stats[rows + r] = holds(t, first_id, V) ? xr[t - first_id] : 0.f;
  }
}

// One thread per row: the whole row's log-sum-exp over the ranks and its loss.
__global__ void combine_kernel(const float* all, int64_t ranks, const int32_t* targets, float* lse,
                               float* row_loss, int64_t rows, int32_t ignore_index) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  lse[r] = 0.f, row_loss[r] = 0.f;
  if (targets[r] == ignore_index) return;
  const int64_t stride = 2 * rows;
  float m = minus_inf();
  for (int64_t k = 0; k < ranks; ++k) m = fmaxf(m, all[k * stride + r]);
  float s = 0.f, target_logit = 0.f;
  for (int64_t k = 0; k < ranks; ++k) {
    s += math::exp_f32(all[k * stride + r] - m);
    target_logit += all[k * stride + rows + r];
  }
  lse[r] = m + logf(s);
  row_loss[r] = lse[r] - target_logit;
}

template <class T>
__global__ void backward_kernel(const float* logits, const int32_t* targets, const float* lse,
                                const float* g, int64_t count, T* gx, int64_t V, int64_t first_id,
                                int32_t ignore_index) {
  const float scale = count ? g[0] / float(count) : 0.f;
  const int64_t r = blockIdx.x;
  const int32_t t = targets[r];
  const float* xr = logits + r * V;
  T* gr = gx + r * V;
  const bool ignored = t == ignore_index;
  const int64_t target_col = holds(t, first_id, V) ? t - first_id : -1;
  const float l = lse[r];
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
    float v = 0.f;
    if (!ignored) v = scale * math::exp_f32(xr[c] - l) - (c == target_col ? scale : 0.f);
    st(gr, c, v);
  }
}

}  // namespace

void sharded_cross_entropy_stats(const float* logits, const int32_t* targets, float* stats,
                                 int64_t rows, int64_t V, int64_t first_id, int32_t ignore_index,
                                 cudaStream_t s) {
  if (rows <= 0) return;
  launch<stats_kernel>(unsigned(rows), kRowThreads, 0, s, logits, targets, stats, rows, V, first_id,
                       ignore_index);
  CUDA_CHECK_LAUNCH();
}

void sharded_cross_entropy_combine(const float* all, int64_t ranks, const int32_t* targets,
                                   float* lse, float* loss, int64_t rows, int32_t ignore_index,
                                   cudaStream_t s) {
  const size_t bytes = size_t(rows > 0 ? rows : 1) * sizeof(float);
  DeviceCachingAllocator& alloc = device_allocator();
  auto* row_loss = static_cast<float*>(alloc.allocate_on(bytes, s));
  if (rows > 0) {
    launch<combine_kernel>(unsigned((rows + kRowThreads - 1) / kRowThreads), kRowThreads, 0, s, all,
                           ranks, targets, lse, row_loss, rows, ignore_index);
    CUDA_CHECK_LAUNCH();
  }
  masked_row_mean(row_loss, targets, rows, ignore_index, loss, s);
  alloc.release(row_loss, bytes);  // stream-ordered: reused on s only after these kernels
}

template <class T>
void sharded_cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                                    const float* g, int64_t count, T* gx, int64_t rows, int64_t V,
                                    int64_t first_id, int32_t ignore_index, cudaStream_t s) {
  if (rows <= 0) return;
  launch<backward_kernel<T>>(unsigned(rows), kRowThreads, 0, s, logits, targets, lse, g, count, gx,
                             V, first_id, ignore_index);
  CUDA_CHECK_LAUNCH();
}
template void sharded_cross_entropy_backward<float>(const float*, const int32_t*, const float*,
                                                    const float*, int64_t, float*, int64_t, int64_t,
                                                    int64_t, int32_t, cudaStream_t);
template void sharded_cross_entropy_backward<bf16>(const float*, const int32_t*, const float*,
                                                   const float*, int64_t, bf16*, int64_t, int64_t,
                                                   int64_t, int32_t, cudaStream_t);

}  // namespace tessera::cuda
