#include "kernels/cuda/cached_attention.h"

#include "kernels/common/activation_math.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.cuh"

namespace tessera::cuda {
namespace {

constexpr int kMaxPerLane = int(kCachedAttentionMaxHeadSize) / kWarp;

// Element i of the new tokens' k and v heads into cache positions start .. start + T_new - 1.
__global__ void append_kernel(kernels::CachedAttentionDims d, const float* qkv, float* k_cache,
                              float* v_cache) {
  const int64_t hs = d.head_size, n = d.batch * d.new_tokens * d.kv_heads * hs;
  TS_GRID_STRIDE(i, n) {
    const int64_t c = i % hs, g = (i / hs) % d.kv_heads, t = (i / (hs * d.kv_heads)) % d.new_tokens,
                  b = i / (hs * d.kv_heads * d.new_tokens);
    const float* row = qkv + (b * d.new_tokens + t) * d.qkv_width();
    const int64_t at = ((b * d.kv_heads + g) * d.capacity + d.start + t) * hs + c;
    k_cache[at] = row[(d.heads + g) * hs + c];
    v_cache[at] = row[(d.heads + d.kv_heads + g) * hs + c];
  }
}

// One warp per (b, t, h) query: an online softmax over the cached positions 0 .. start + t,
// each lane owning channels lane, lane + 32, ... of the head.
__global__ void attend_kernel(kernels::CachedAttentionDims d, const float* qkv,
                              const float* k_cache, const float* v_cache, float* out) {
  const int64_t i = blockIdx.x;
  const int lane = int(threadIdx.x);
  const int64_t h = i % d.heads, t = (i / d.heads) % d.new_tokens, b = i / (d.heads * d.new_tokens),
                hs = d.head_size;
  const float* q = qkv + (b * d.new_tokens + t) * d.qkv_width() + h * hs;
  const int64_t base = (b * d.kv_heads + h / (d.heads / d.kv_heads)) * d.capacity * hs;
  const float scale = 1.f / sqrtf(float(hs));
  float qr[kMaxPerLane], acc[kMaxPerLane];
  for (int k = 0; k < kMaxPerLane; ++k) {
    const int64_t c = lane + k * kWarp;
    qr[k] = c < hs ? q[c] : 0.f;
    acc[k] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j <= d.start + t; ++j) {
    const float* kj = k_cache + base + j * hs;
    const float* vj = v_cache + base + j * hs;
    float s = 0.f;
    for (int k = 0; k < kMaxPerLane; ++k) {
      const int64_t c = lane + k * kWarp;
      if (c < hs) s += qr[k] * kj[c];
    }
    s = warp_sum(s) * scale;
    const float m_new = fmaxf(m, s), corr = math::exp_f32(m - m_new), p = math::exp_f32(s - m_new);
    l = l * corr + p;
    for (int k = 0; k < kMaxPerLane; ++k) {
      const int64_t c = lane + k * kWarp;
      acc[k] = acc[k] * corr + (c < hs ? p * vj[c] : 0.f);
    }
    m = m_new;
  }
  float* o = out + (b * d.new_tokens + t) * d.heads * hs + h * hs;
  for (int k = 0; k < kMaxPerLane; ++k) {
    const int64_t c = lane + k * kWarp;
    if (c < hs) o[c] = acc[k] / l;
  }
}

}  // namespace

void cached_attention(const kernels::CachedAttentionDims& d, const float* qkv, float* k_cache,
                      float* v_cache, float* out, cudaStream_t stream) {
  const int64_t appended = d.batch * d.new_tokens * d.kv_heads * d.head_size;
  if (appended == 0) return;
  launch<append_kernel>(grid_for(appended), kThreads, 0, stream, d, qkv, k_cache, v_cache);
  CUDA_CHECK_LAUNCH();
  const int64_t queries = d.batch * d.new_tokens * d.heads;
  launch<attend_kernel>(dim3(unsigned(queries)), dim3(kWarp), 0, stream, d, qkv,
                        static_cast<const float*>(k_cache), static_cast<const float*>(v_cache),
                        out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
