// Fused causal attention on tensor cores for 16-bit q/k/v: the grouped-query layout of
// attention.h (qkv [B, T, C + 2 Ckv] holding q heads | k heads | v heads, query head h reading
// kv head h / (H / Hkv); Hkv = H is GPT-2's [B, T, 3C]), and its window form (queries at an
// offset over separate keys and values; self-attention is the offset-0 case, the same kernels),
// bf16 or f16 storage, head sizes 64 and 128, f32 accumulation.
//
// FlashAttention-2's structure, with the portable WMMA API (16x16x16 fragments, sm_80+):
//   forward: a block per (batch*head, 64-query tile); S = Q K^T on tensor cores into f32, the
//     online softmax in f32, P rounded to the 16-bit type, O += P V on tensor cores; the per-row
//     log-sum-exp (f32) is saved for the backward.
//   backward: delta_i = dO_i . O_i (one warp per row), then a dq kernel (a block per query
//     tile, walking the key tiles up to the diagonal) and a dk/dv kernel (a block per key tile
//     of a kv head, walking the query tiles from the diagonal for each query head of the kv
//     head's group in turn): P recomputed from the saved log-sum-exp,
//     dS = P * (dP - delta) rounded to the 16-bit type. Every output element is written by one
//     block, no atomics: results are reproducible run to run.
//
// Differences from attention.h's CUDA-core kernels (so that an op can switch between them):
// the outputs out and dqkv are f32 (the op hands f32 to the rest of the graph, so there is no
// point rounding them), and the incoming gradient dout (f32) is rounded to the 16-bit type on
// load, for delta as well as for the tensor-core products. The f32 reference of these kernels
// is therefore cpu::attention on the 16-bit-rounded qkv and dout; they differ from it by the
// summation order and by the two internal roundings of P and dS (each at most one unit
// roundoff of the 16-bit type: u = 2^-8 for bf16, 2^-11 for f16).
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/device.h"
#include "kernels/common/attention_dims.h"

namespace tessera::cuda {

constexpr int kAttentionTcTile = 64;  // queries (forward, dq) or keys (dk/dv) per block
constexpr int kAttentionTcWarps = 4;  // each warp owns 16 rows of the block's tile

// The head sizes the tensor-core kernels are compiled for.
constexpr bool attention_tc_supports(int64_t head_size) {
  return kernels::cuda_attention_tc_supports(head_size);
}

// Launch geometry of the forward, dq and dk/dv kernels. Host only: needs no device.
struct AttentionTcLaunch {
  int64_t head_size = 0;
  unsigned tiles = 0;     // grid.x of the forward and dq kernels: ceil(Tq / 64) query tiles
  unsigned kv_tiles = 0;  // grid.x of the dk/dv kernel: ceil(Tk / 64) key tiles
  unsigned pairs = 0;     // grid.y of the forward and dq kernels: batch * heads
  unsigned kv_pairs = 0;  // grid.y of the dk/dv kernel: batch * kv heads
  unsigned threads = 0;   // per block
  size_t smem_forward = 0, smem_dq = 0, smem_dkv = 0;  // dynamic shared memory per block, bytes
};

// Checks d (heads dividing channels, kv heads dividing heads, a supported head size,
// batch * heads within grid.y, keys >= offset + queries) and returns the geometry; throws
// tessera::Error naming the values otherwise.
AttentionTcLaunch attention_tc_window_launch(const kernels::AttentionWindowDims& d);
// The same for self-attention on a fused qkv (the window at offset 0: tiles = kv_tiles).
AttentionTcLaunch attention_tc_launch(const kernels::AttentionDims& d);

// A window of queries over keys (kernels/common/attention_dims.h): out [B, Tq, C] and lse
// [B, H, Tq] (f32) from q and kv (T = bf16, f16); then dq and dkv (f32, q's and kv's layouts,
// overwritten; dkv zero for keys no query sees) as the fused functions below describe. q, kv,
// out, dq and dkv must be 16-byte aligned (kv's k heads start at kv_col: a multiple of 8).
template <class T>
void attention_tc_window_forward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                                 float* out, float* lse, cudaStream_t s = current_stream());
template <class T>
void attention_tc_window_backward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                                  const float* out, const float* lse, const float* dout, float* dq,
                                  float* dkv, cudaStream_t s = current_stream());

// out [B, T, C] (f32) and lse [B, H, T] (f32, natural log) from qkv [B, T, C + 2 Ckv]
// (T = bf16, f16). qkv and out must be 16-byte aligned. Needs compute capability 8.0 or later.
template <class T>
void attention_tc_forward(const kernels::AttentionDims& d, const T* qkv, float* out, float* lse,
                          cudaStream_t s = current_stream());

// dqkv [B, T, C + 2 Ckv] (f32, overwritten) from dout [B, T, C] (f32, rounded to T inside), given
// the forward's qkv, out and lse. qkv and dqkv must be 16-byte aligned; out and dout may be any
// contiguous f32 buffers (read one element at a time).
template <class T>
void attention_tc_backward(const kernels::AttentionDims& d, const T* qkv, const float* out,
                           const float* lse, const float* dout, float* dqkv,
                           cudaStream_t s = current_stream());

}  // namespace tessera::cuda
