// The decoder block and its parts, with the components a model kind chooses (nn/decoder.h):
// LayerNorm or RMSNorm, GELU MLP or SwiGLU, multi-head or grouped-query attention, biases on or
// off. Attention-probability dropout is not applied (ops::attention has none); dropout acts on
// the residual branches, as GPT-2's resid_pdrop.
#pragma once
#include <cstdint>
#include <optional>

#include "nn/layers.h"
#include "nn/tensor_parallel.h"

namespace tessera::nn {

enum class MlpKind {
  gelu,    // c_fc (C -> F) -> gelu -> c_proj (F -> C): GPT-2
  swiglu,  // c_fc (C -> 2F, gate | up) -> silu(gate) * up -> c_proj (F -> C): Llama
};
const char* mlp_kind_name(MlpKind kind);  // "gelu" | "swiglu"

// What a block's layers need to build themselves.
struct BlockInit {
  int64_t n_embd = 0;
  int n_head = 0;
  int n_kv_head = 0;       // key/value heads: n_head (multi-head) or a divisor of it (GQA)
  int64_t mlp_hidden = 0;  // F
  NormKind norm = NormKind::layer_norm;
  float norm_eps = 1e-5f;
  MlpKind mlp = MlpKind::gelu;
  bool bias = true;          // on every Linear
  float weight_std = 0.02f;  // c_attn, c_fc
  float proj_std = 0.02f;    // residual projections (attn.c_proj, mlp.c_proj)
  float dropout = 0.f;
  Generator* dropout_gen = nullptr;
};

// Where a block's tokens sit in their sequences. Training: from position 0, no cache.
// Generation: after `start` cached positions, with this block's key/value cache (nn/decoder.h
// KVCache) to append to and attend over.
struct BlockContext {
  int64_t start = 0;
  Tensor* k_cache = nullptr;  // f32 [B, n_kv_head, capacity, hs], or null
  Tensor* v_cache = nullptr;
  const Tensor* rotary = nullptr;  // rotary positions: the decoder's cos/sin table, else null
  // Sequence parallelism (training): the block's input and output are this rank's rows
  // [n_r, C] of the flattened [B*T, C] (nn/tensor_parallel.h); none: [B, T, C]. Held by value:
  // a recomputed block runs again in backward, after the forward that made it has returned.
  std::optional<SequenceShard> sequence;
  const SequenceShard* sequence_shard() const { return sequence ? &*sequence : nullptr; }
  // Context parallelism (training): the block's tokens are this rank's two sequence chunks,
  // rows [2B, Tc] (nn/tensor_parallel.h ContextShard).
  std::optional<ContextShard> context;
};

// A tensor-parallel layer's input: x itself without a group; x through tp_copy with one; with
// sequence parallelism, every rank's rows gathered into [B, T, C].
Tensor parallel_input(const Tensor& x, TensorParallelGroup* tp, const SequenceShard* seq);
// y = x · weight^T summed over the tensor-parallel group, then + bias: a row-parallel layer
// (each rank holds the weight's input columns for its part of x); plain linear.forward(x)
// without a group. With sequence parallelism the sum is reduce-scattered to this rank's rows
// [n_r, C] (and the bias, whose gradient is then partial, has it summed over the group).
Tensor row_parallel_linear(const Linear& linear, const Tensor& x, TensorParallelGroup* tp,
                           const SequenceShard* seq = nullptr);
// Dropout of a layer's output: of this rank's rows under sequence parallelism.
Tensor parallel_dropout(const Dropout& drop, const Tensor& y, const SequenceShard* seq);

class MLP : public Module {
 public:
  MLP(const BlockInit& init, Generator& g);
  Tensor forward(const Tensor& x, const SequenceShard* seq = nullptr) const;

  MlpKind kind;
  Linear c_fc, c_proj;
  Dropout drop;
  // Tensor parallelism (set by Decoder::shard): c_fc column-, c_proj row-parallel over it.
  TensorParallelGroup* tp = nullptr;
};

// c_attn (C -> (n_head + 2 n_kv_head) hs: q heads | k heads | v heads) -> causal attention ->
// c_proj (C -> C) -> dropout.
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(const BlockInit& init, Generator& g);
  Tensor forward(const Tensor& x, const BlockContext& ctx = {}) const;  // x [B, T, C]

  int n_head, n_kv_head;  // this rank's heads (a tensor-parallel rank holds a share)
  // Under context parallelism: each chunk's queries over the whole sequence's keys and values.
  Tensor context_parallel_attention(const Tensor& qkv, const BlockContext& ctx) const;
  Linear c_attn, c_proj;
  Dropout drop;
  // Tensor parallelism (set by Decoder::shard): c_attn column-, c_proj row-parallel over it.
  TensorParallelGroup* tp = nullptr;
};

// The dtype a norm feeding a GEMM should write: bf16 under bf16 autocast, else x's dtype.
DType gemm_input_dtype(const Tensor& x);

// Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class Block : public Module {
 public:
  Block(const BlockInit& init, Generator& g);
  Tensor forward(const Tensor& x, const BlockContext& ctx = {}) const;

  Norm ln_1;
  CausalSelfAttention attn;
  Norm ln_2;
  MLP mlp;
};

}  // namespace tessera::nn
