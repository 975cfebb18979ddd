// Fused causal grouped-query self-attention on a fused qkv [B, T, C + 2 Ckv] laid out
// (q heads | k heads | v heads), query head h reading kv head h / (H / Hkv)
// (kernels/common/attention_dims.h; Hkv = H is GPT-2's [B, T, 3C]). f32 only.
//
// Flash-attention style: the forward never materialises the [T, T] score matrix for more than
// one block of query rows per thread, and keeps only the per-row log-sum-exp for backward,
// which recomputes the probabilities from it.
#pragma once
#include <cstdint>

#include "kernels/common/attention_dims.h"

namespace tessera::cpu {

// out [B, T, C] = per head softmax(q k^T / sqrt(hs) + causal mask) v.
// lse [B, H, T] receives each query row's log-sum-exp of its scaled, masked scores.
void attention_forward(const kernels::AttentionDims& d, const float* qkv, float* out, float* lse);

// dqkv [B, T, C + 2 Ckv] (overwritten) from dout [B, T, C], given the forward's qkv, out and
// lse. A kv head's dk and dv sum over its query heads in head order (reproducible).
void attention_backward(const kernels::AttentionDims& d, const float* qkv, const float* out,
                        const float* lse, const float* dout, float* dqkv);

}  // namespace tessera::cpu
