// Fused causal grouped-query attention, query head h reading kv head h / (H / Hkv)
// (kernels/common/attention_dims.h): self-attention on a fused qkv [B, T, C + 2 Ckv] laid out
// (q heads | k heads | v heads) (Hkv = H is GPT-2's [B, T, 3C]), and its general form, a window
// of queries at an offset over separate keys and values (context parallelism). f32 only.
//
// Flash-attention style: the forward never materialises the [T, T] score matrix for more than
// one block of query rows per thread, and keeps only the per-row log-sum-exp for backward,
// which recomputes the probabilities from it.
#pragma once
#include <cstdint>

#include "kernels/common/attention_dims.h"

namespace tessera::cpu {

// A window of queries over keys (kernels/common/attention_dims.h): out [B, Tq, C] = per head
// softmax(q k^T / sqrt(hs) + causal mask at q_offset) v; lse [B, H, Tq] receives each query
// row's log-sum-exp of its scaled, masked scores.
void attention_window_forward(const kernels::AttentionWindowDims& d, const float* q,
                              const float* kv, float* out, float* lse);

// dq (q's layout: its C query columns overwritten) and dkv (kv's layout: its 2 Ckv columns
// overwritten, zero for keys no query sees) from dout [B, Tq, C], given the forward's q, kv,
// out and lse. dq and dkv may be one buffer (a fused dqkv). A kv head's dk and dv sum over its
// query heads in head order (reproducible).
void attention_window_backward(const kernels::AttentionWindowDims& d, const float* q,
                               const float* kv, const float* out, const float* lse,
                               const float* dout, float* dq, float* dkv);

// Self-attention on a fused qkv: the window at offset 0 over the qkv's own rows (the same code).
// out [B, T, C], lse [B, H, T].
void attention_forward(const kernels::AttentionDims& d, const float* qkv, float* out, float* lse);

// dqkv [B, T, C + 2 Ckv] (overwritten) from dout [B, T, C], given the forward's qkv, out and
// lse.
void attention_backward(const kernels::AttentionDims& d, const float* qkv, const float* out,
                        const float* lse, const float* dout, float* dqkv);

}  // namespace tessera::cpu
