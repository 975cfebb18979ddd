// The shape argument of the fused causal attention kernels (cpu/attention.h, cuda/attention.h,
// cuda/attention_tc.h): grouped-query attention on a fused qkv [B, T, (H + 2 Hkv) * hs] laid
// out (q heads | k heads | v heads): query head h owns columns [h*hs, (h+1)*hs), kv head g owns
// [C + g*hs, ...) (k) and [C + Ckv + g*hs, ...) (v), with C = H * hs and Ckv = Hkv * hs. Query
// head h reads kv head h / (H / Hkv). Hkv = H is GPT-2's layout [B, T, 3C]; Hkv = 1 is
// multi-query attention. The output is [B, T, C].
#pragma once
#include <cstdint>

namespace tessera::kernels {

struct AttentionDims {
  int64_t batch = 0;     // B
  int64_t seq = 0;       // T
  int64_t channels = 0;  // C (= heads * head size): the width of the queries and of the output
  int64_t heads = 0;     // H: query heads
  int64_t kv_heads = 0;  // Hkv: key / value heads, dividing H (no default: the caller says)
};

// Valid dims: H > 0 dividing C, Hkv > 0 dividing H (what every kernel checks first).
constexpr bool attention_dims_valid(const AttentionDims& d) {
  return d.heads > 0 && d.channels % d.heads == 0 && d.kv_heads > 0 && d.heads % d.kv_heads == 0;
}
constexpr int64_t attention_head_size(const AttentionDims& d) {
  return d.channels / d.heads;
}
// Query heads per kv head (H / Hkv).
constexpr int64_t attention_group(const AttentionDims& d) {
  return d.heads / d.kv_heads;
}
// Ckv: the width of k (and of v) in a qkv row.
constexpr int64_t attention_kv_channels(const AttentionDims& d) {
  return d.kv_heads * attention_head_size(d);
}
// The qkv row stride C + 2 Ckv.
constexpr int64_t attention_qkv_width(const AttentionDims& d) {
  return d.channels + 2 * attention_kv_channels(d);
}

// What the CUDA attention kernels take (ops/attention.cpp checks it before choosing one): the
// CUDA-core kernels any head size up to this, the tensor-core ones (16-bit) these head sizes.
constexpr int64_t kCudaAttentionMaxHeadSize = 128;
constexpr bool cuda_attention_tc_supports(int64_t head_size) {
  return head_size == 64 || head_size == 128;
}

}  // namespace tessera::kernels
