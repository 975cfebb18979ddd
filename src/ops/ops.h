// The op table's public face: every differentiable op Tensor -> Tensor. Each op checks its
// inputs (throwing tessera::Error naming the op, the shapes and what was expected), dispatches
// to the kernel for the tensor's device and dtype, and records its backward on the tape.
// Ops take contiguous inputs (they make them so) and return contiguous outputs.
#pragma once
#include <cstdint>
#include <functional>

#include "core/rng.h"
#include "core/tensor.h"

namespace tessera::ops {

// ---- shape and type ----
Tensor reshape(const Tensor& x, const Shape& shape);  // a view when x is contiguous
Tensor transpose(const Tensor& x, int a, int b);      // a contiguous copy with dims a, b swapped
Tensor cast(const Tensor& x, DType dtype);            // between f32 / bf16 / f16
// Copies of rows [a, b) (dim 0) and of columns [a, b) (the last dim), and a joined to b along
// dim 0 (the same dims after the first); gradients flow back to the inputs' parts.
Tensor rows(const Tensor& x, int64_t a, int64_t b);
Tensor columns(const Tensor& x, int64_t a, int64_t b);
Tensor concat_rows(const Tensor& a, const Tensor& b);

// ---- element-wise and reductions ----
// b has a's shape, or a's trailing dims (broadcast over the leading ones: biases, positions).
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float s);
Tensor sum(const Tensor& x);   // all elements -> scalar f32
Tensor mean(const Tensor& x);  // all elements -> scalar f32

// ---- linear algebra (oneDNN) ----
// a [..., m, k] · b [k, n]  or batched a [B, m, k] · b [B, k, n]. Output f32.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] · w[out, in]^T + b[out]. GEMM inputs are cast to autocast_dtype() (f32 or bf16);
// accumulation and the output are f32.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
// gelu(linear(x, w, b)) fused: the GELU runs on the GEMM's f32 output and writes the result in
// the GEMM compute dtype (bf16 under bf16 autocast: the next GEMM's input, no cast pass); the
// backward computes the GELU gradient, the bias gradient and the compute-dtype GEMM operand in
// one pass. Same numbers as the unfused ops.
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// ---- activations ----
Tensor gelu(const Tensor& x);  // tanh approximation, as GPT-2
Tensor silu(const Tensor& x);
Tensor relu(const Tensor& x);
// SwiGLU (Llama's MLP): x [..., 2F] laid out (gate | up) -> silu(gate) * up [..., F], one fused
// pass each way, so a Llama MLP is linear(gate_up) -> swiglu -> linear(down). An f32 x gives
// the output in autocast's GEMM dtype (bf16 under bf16 autocast: the down projection's operand,
// as linear_gelu does); a bf16 / f16 x keeps its dtype. The gradient is in x's dtype.
Tensor swiglu(const Tensor& x);

// ---- normalisation, softmax, losses ----
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps = 1e-5f);
// The same with the output stored as `out` (from an f32 input, any float type): under autocast,
// the bf16 input of the next GEMM straight from the f32 residual stream, with no cast pass.
// The gradient still flows back in f32.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, DType out);
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps = 1e-6f);
Tensor softmax(const Tensor& x);  // over the last dim
// logits [..., V] (f32), targets i32 [...]: mean over targets != ignore_index of -log softmax.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -1);
// The same, with the logits' gradient stored as grad_dtype (f32 or bf16): bf16 when the logits
// come from a bf16 GEMM (GPT-2's head under autocast), whose backward would round it anyway.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index,
                     DType grad_dtype);

// Cross-entropy of logits split by vocabulary across ranks (tensor parallelism's head: no rank
// holds a row's whole logits). logits f32 [..., V] are this rank's ids [first_id, first_id + V)
// of a vocabulary of vocab_size; targets are whole-vocabulary ids. `gather` exchanges the
// per-row statistics: it gets this rank's f32 [2, rows] and returns every rank's, [ranks, 2,
// rows] in rank order (an all-gather over the ranks holding the shards). The loss is the
// unsharded cross_entropy's, the same on every rank; the gradient covers this rank's columns.
using GatherShardStats = std::function<Tensor(const Tensor& stats)>;
Tensor sharded_cross_entropy(const Tensor& logits, const Tensor& targets, int64_t first_id,
                             int64_t vocab_size, int32_t ignore_index, DType grad_dtype,
                             const GatherShardStats& gather);

// ---- lookup, attention, convolution ----
Tensor embedding(const Tensor& weight, const Tensor& ids);  // weight [V, C], ids i32 -> [..., C]
// A shard of a vocabulary-parallel table: weight holds rows [first_id, first_id + V) of the
// whole table; ids outside them read as zero rows and give no gradient (the rank that holds
// them supplies those; tensor parallelism sums the ranks' outputs).
Tensor embedding(const Tensor& weight, const Tensor& ids, int64_t first_id);
// Causal multi-head self-attention: qkv [B, T, 3C] laid out (q | k | v), heads of C / n_head.
// Returns the context [B, T, C] (before the output projection). = attention(qkv, n_head, n_head).
Tensor attention(const Tensor& qkv, int n_head);
// Causal grouped-query self-attention (Llama): qkv [B, T, (n_head + 2 n_kv_head) * hs] laid out
// (q heads | k heads | v heads); query head h attends with kv head h / (n_head / n_kv_head).
// n_kv_head divides n_head (n_kv_head = n_head: multi-head, bit-identical to the overload above;
// n_kv_head = 1: multi-query). Returns the context [B, T, n_head * hs]. The gradient of a kv
// head sums over its query heads in a fixed order (reproducible run to run).
Tensor attention(const Tensor& qkv, int n_head, int n_kv_head);
// Causal attention of a window of queries over a longer run of keys (context parallelism: a
// rank's query chunk against the all-gathered keys and values). q [B, Tq, n_head * hs], kv
// [B, Tk, 2 n_kv_head * hs] laid out (k heads | v heads), both f32 on one device. Query i is at
// position q_offset + i and attends to keys 0 .. q_offset + i (grouped-query as above); requires
// Tk >= q_offset + Tq (later keys are ignored: their gradient is zero). Returns the context
// [B, Tq, n_head * hs]: rows [q_offset, q_offset + Tq) of attention over the whole sequence.
// With q_offset = 0, Tk = Tq and q, kv cut from a qkv it is attention(qkv, n_head, n_kv_head)
// bit for bit (the same kernels), gradients too. Autocast rounds q, k, v as attention does.
Tensor attention_window(const Tensor& q, const Tensor& kv, int n_head, int n_kv_head,
                        int64_t q_offset);
// Rotary position embeddings (Llama): qkv as attention(qkv, n_head, n_kv_head) takes it, with
// its q and k heads rotated, its v heads unchanged. Hugging Face Llama's rotate_half pairing
// (element i of a head with i + hs/2), so HF weights load without permuting q and k. Token t
// is at position position_offset + t (0 in training; a KV cache's length when generating) and
// uses that row of table [positions, 2, hs/2] (cos, then sin), built by ops::rope_table
// (ops/rope_table.h: rope_theta and Llama 3's rope_scaling, in double precision). qkv f32, bf16
// or f16 (the output keeps it); table f32 on qkv's device. The backward rotates the gradient
// by minus the angles. Not differentiable in table.
Tensor rope(const Tensor& qkv, const Tensor& table, int n_head, int n_kv_head,
            int64_t position_offset = 0);
// Generation's attention through a key/value cache (kernels/common/cached_attention_dims.h):
// qkv [B, T_new, (n_head + 2 n_kv_head) hs] of the new tokens at positions start ..
// start + T_new - 1; their k and v are written into k_cache / v_cache f32 [B, n_kv_head,
// capacity, hs] (contiguous), and each attends causally to every cached position. Returns the
// context [B, T_new, n_head hs]. No gradient (generation runs under NoGradGuard).
Tensor cached_attention(const Tensor& qkv, int n_head, int n_kv_head, Tensor& k_cache,
                        Tensor& v_cache, int64_t start);
// x [N, Cin, H, W], w [Cout, Cin, kh, kw], b [Cout] (optional).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride = 1, int padding = 0);
Tensor max_pool2d(const Tensor& x, int kernel, int stride);

// Zeroes each element with probability p and scales survivors by 1/(1-p); identity when
// !training or p == 0. Draws from g (deterministic).
Tensor dropout(const Tensor& x, float p, Generator& g, bool training = true);

}  // namespace tessera::ops
