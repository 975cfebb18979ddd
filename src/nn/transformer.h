// The GPT-2 transformer block and its parts. Attention-probability dropout is not applied
// (ops::attention has none); dropout acts on the residual branches, as GPT-2's resid_pdrop.
#pragma once
#include <cstdint>

#include "nn/layers.h"

namespace tessera::nn {

// What the block's layers need to build themselves.
struct BlockInit {
  int64_t n_embd = 0;
  int n_head = 0;
  float weight_std = 0.02f;  // c_attn, c_fc
  float proj_std = 0.02f;    // residual projections (attn.c_proj, mlp.c_proj)
  float dropout = 0.f;
  Generator* dropout_gen = nullptr;
};

// c_fc (C -> 4C) -> gelu -> c_proj (4C -> C) -> dropout.
class MLP : public Module {
 public:
  MLP(const BlockInit& init, Generator& g);
  Tensor forward(const Tensor& x) const;

  Linear c_fc, c_proj;
  Dropout drop;
};

// c_attn (C -> 3C, q | k | v) -> causal attention over n_head heads -> c_proj (C -> C) -> dropout.
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(const BlockInit& init, Generator& g);
  Tensor forward(const Tensor& x) const;  // x [B, T, C]

  int n_head;
  Linear c_attn, c_proj;
  Dropout drop;
};

// The dtype a LayerNorm feeding a GEMM should write: bf16 under bf16 autocast, else x's dtype.
DType gemm_input_dtype(const Tensor& x);

// Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class Block : public Module {
 public:
  Block(const BlockInit& init, Generator& g);
  Tensor forward(const Tensor& x) const;

  LayerNorm ln_1;
  CausalSelfAttention attn;
  LayerNorm ln_2;
  MLP mlp;
};

}  // namespace tessera::nn
