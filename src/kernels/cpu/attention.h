// Fused causal multi-head self-attention on the GPT-2 layout: qkv [B, T, 3C] holds (q | k | v),
// head h owning columns [h*hs, (h+1)*hs) of each third (hs = C / H). f32 only.
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

// dqkv [B, T, 3C] (overwritten) from dout [B, T, C], given the forward's qkv, out and lse.
void attention_backward(const kernels::AttentionDims& d, const float* qkv, const float* out,
                        const float* lse, const float* dout, float* dqkv);

}  // namespace tessera::cpu
