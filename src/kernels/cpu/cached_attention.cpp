#include "kernels/cpu/cached_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/common/activation_math.h"

namespace tessera::cpu {

namespace {

// The new tokens' k and v heads into cache positions start .. start + T_new - 1.
void append_to_cache(const kernels::CachedAttentionDims& d, const float* qkv, float* k_cache,
                     float* v_cache) {
  const int64_t hs = d.head_size, W = d.qkv_width();
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = 0; t < d.new_tokens; ++t) {
      const float* row = qkv + (b * d.new_tokens + t) * W;
      for (int64_t g = 0; g < d.kv_heads; ++g) {
        const int64_t at = ((b * d.kv_heads + g) * d.capacity + d.start + t) * hs;
        std::memcpy(k_cache + at, row + (d.heads + g) * hs, size_t(hs) * sizeof(float));
        std::memcpy(v_cache + at, row + (d.heads + d.kv_heads + g) * hs,
                    size_t(hs) * sizeof(float));
      }
    }
}

}  // namespace

void cached_attention(const kernels::CachedAttentionDims& d, const float* qkv, float* k_cache,
                      float* v_cache, float* out) {
  append_to_cache(d, qkv, k_cache, v_cache);
  const int64_t hs = d.head_size, W = d.qkv_width(), group = d.heads / d.kv_heads;
  const float scale = 1.f / std::sqrt(float(hs));
  const int64_t queries = d.batch * d.new_tokens * d.heads;
#pragma omp parallel
  {
    std::vector<float> p(size_t(d.start + d.new_tokens));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < queries; ++i) {
      const int64_t h = i % d.heads, t = (i / d.heads) % d.new_tokens,
                    b = i / (d.heads * d.new_tokens);
      const float* q = qkv + (b * d.new_tokens + t) * W + h * hs;
      const int64_t base = (b * d.kv_heads + h / group) * d.capacity * hs;
      const float* k = k_cache + base;
      const float* v = v_cache + base;
      const int64_t n = d.start + t + 1;  // causal: up to and including this position
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        float s = 0.f;
        for (int64_t c = 0; c < hs; ++c) s += q[c] * k[j * hs + c];
        p[size_t(j)] = s * scale;
        mx = std::max(mx, p[size_t(j)]);
      }
      float total = 0.f;
      for (int64_t j = 0; j < n; ++j) total += p[size_t(j)] = math::exp_f32(p[size_t(j)] - mx);
      float* o = out + (b * d.new_tokens + t) * d.heads * hs + h * hs;
      std::fill(o, o + hs, 0.f);
      for (int64_t j = 0; j < n; ++j) {
        const float w = p[size_t(j)] / total;
        for (int64_t c = 0; c < hs; ++c) o[c] += w * v[j * hs + c];
      }
    }
  }
}

}  // namespace tessera::cpu
