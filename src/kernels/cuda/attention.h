// Fused causal grouped-query attention (cpu/attention.h): self-attention on a qkv
// [B, T, C + 2 Ckv] holding (q heads | k heads | v heads), query head h reading kv head
// h / (H / Hkv) (kernels/common/attention_dims.h; Hkv = H: GPT-2's [B, T, 3C]), and a window of
// queries at an offset over separate keys and values, the same kernels. Storage type T
// (float or bf16) for qkv, out and dqkv; lse and the incoming gradient dout are f32; all
// arithmetic is f32.
//
// Flash-attention style with an online softmax: no [T, T] matrix exists anywhere; the forward
// keeps per query row a running max, sum and output, the backward recomputes probabilities from
// the saved log-sum-exp. Extra memory is O(B * H * T) (lse, and delta in the backward).
// This is a correctness-first CUDA-core kernel (one warp per query row, 32-key tiles in shared
// memory). Head size <= 128. Under bf16/f16 autocast with head size 64 or 128 the op uses the
// tensor-core kernels instead (attention_tc.h); this one serves f32 and other head sizes.
#pragma once
#include <cstdint>

#include "cuda/device.h"
#include "kernels/common/attention_dims.h"

namespace tessera::cuda {

constexpr int64_t kAttentionMaxHeadSize = kernels::kCudaAttentionMaxHeadSize;

// A window of queries over keys (kernels/common/attention_dims.h; cpu/attention.h): out
// [B, Tq, C] and lse [B, H, Tq] from q and kv (one pointer twice for a fused qkv).
template <class T>
void attention_window_forward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                              T* out, float* lse, cudaStream_t s = current_stream());

// dq (q's layout) and dkv (kv's layout; zero for keys no query sees; the same buffer as dq for a
// fused dqkv) from dout [B, Tq, C] (f32), given the forward's q, kv, out, lse. A kv head's dk and
// dv sum over its query heads in head order, in one block's registers.
template <class T>
void attention_window_backward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                               const T* out, const float* lse, const float* dout, T* dq, T* dkv,
                               cudaStream_t s = current_stream());

// Self-attention on a fused qkv [B, T, C + 2 Ckv]: the window at offset 0 over its own rows.
template <class T>
void attention_forward(const kernels::AttentionDims& d, const T* qkv, T* out, float* lse,
                       cudaStream_t s = current_stream());

// dqkv [B, T, C + 2 Ckv] (overwritten) from dout [B, T, C] (f32), given the forward's qkv, out,
// lse.
template <class T>
void attention_backward(const kernels::AttentionDims& d, const T* qkv, const T* out,
                        const float* lse, const float* dout, T* dqkv,
                        cudaStream_t s = current_stream());

}  // namespace tessera::cuda
