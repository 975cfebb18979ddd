// The shape arguments of the fused causal attention kernels (cpu/attention.h, cuda/attention.h,
// cuda/attention_tc.h). AttentionDims: self-attention, grouped-query attention on a fused qkv [B,
// T, (H + 2 Hkv) * hs] laid out (q heads | k heads | v heads): query head h owns columns [h*hs,
// (h+1)*hs), kv head g owns [C + g*hs, ...) (k) and [C + Ckv + g*hs, ...) (v), with C = H * hs and
// Ckv = Hkv * hs. Query head h reads kv head h / (H / Hkv). Hkv = H is GPT-2's layout [B, T, 3C];
// Hkv = 1 is multi-query attention. The output is [B, T, C].
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

// What every kernel runs: a window of queries attending causally to keys (context parallelism:
// a rank's query chunk against the whole sequence's keys). Query i of q_seq sits at position
// q_offset + i and sees keys 0 .. q_offset + i; kv_seq >= q_offset + q_seq, and keys past the
// last query's position are seen by nobody (their dk and dv are zero). q and kv are addressed by
// row strides and a column offset, so they may be separate buffers (q [B, Tq, C] and kv
// [B, Tk, 2 Ckv]: k heads | v heads) or the parts of one fused qkv (attention_window_of below).
// out and dout are [B, Tq, C], lse [B, H, Tq]; dq and dkv have q's and kv's layouts.
struct AttentionWindowDims {
  int64_t batch = 0;     // B
  int64_t q_seq = 0;     // Tq: query rows
  int64_t kv_seq = 0;    // Tk: key / value rows
  int64_t q_offset = 0;  // the position of query row 0 among the keys
  int64_t channels = 0;  // C = H * hs
  int64_t heads = 0;     // H
  int64_t kv_heads = 0;  // Hkv, dividing H
  int64_t q_row = 0;     // elements between consecutive rows of q (and of dq); q head 0 at col 0
  int64_t kv_row = 0;    // elements between consecutive rows of kv (and of dkv)
  int64_t kv_col = 0;    // where k head 0 starts in a kv row; v head 0 starts Ckv later
};

// Valid dims: H > 0 dividing C, Hkv > 0 dividing H (what every kernel checks first). The
// helpers take either dims struct (both name channels, heads and kv_heads alike).
template <class Dims>
constexpr bool attention_dims_valid(const Dims& d) {
  return d.heads > 0 && d.channels % d.heads == 0 && d.kv_heads > 0 && d.heads % d.kv_heads == 0;
}
template <class Dims>
constexpr int64_t attention_head_size(const Dims& d) {
  return d.channels / d.heads;
}
// Query heads per kv head (H / Hkv).
template <class Dims>
constexpr int64_t attention_group(const Dims& d) {
  return d.heads / d.kv_heads;
}
// Ckv: the width of k (and of v) in a qkv row.
template <class Dims>
constexpr int64_t attention_kv_channels(const Dims& d) {
  return d.kv_heads * attention_head_size(d);
}
// The qkv row stride C + 2 Ckv.
constexpr int64_t attention_qkv_width(const AttentionDims& d) {
  return d.channels + 2 * attention_kv_channels(d);
}

// Self-attention over a fused qkv is the window at offset 0 whose q and kv are the same rows:
// pass the qkv pointer as both q and kv (k heads from column C). Invalid dims stay invalid (and
// divide by nothing): the kernels' checks report them.
constexpr AttentionWindowDims attention_window_of(const AttentionDims& d) {
  const int64_t width = attention_dims_valid(d) ? attention_qkv_width(d) : 0;
  return {d.batch, d.seq, d.seq, 0, d.channels, d.heads, d.kv_heads, width, width, d.channels};
}

// The window's shape requirement (every kernel checks it after attention_dims_valid).
constexpr bool attention_window_valid(const AttentionWindowDims& w) {
  return w.batch >= 0 && w.q_seq >= 0 && w.q_offset >= 0 && w.kv_seq >= w.q_offset + w.q_seq;
}

// What the CUDA attention kernels take (ops/attention.cpp checks it before choosing one): the
// CUDA-core kernels any head size up to this, the tensor-core ones (16-bit) these head sizes.
constexpr int64_t kCudaAttentionMaxHeadSize = 128;
constexpr bool cuda_attention_tc_supports(int64_t head_size) {
  return head_size == 64 || head_size == 128;
}

}  // namespace tessera::kernels
