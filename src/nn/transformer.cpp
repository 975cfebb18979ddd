#include "nn/transformer.h"

#include "ops/autocast.h"
#include "ops/ops.h"

namespace tessera::nn {

MLP::MLP(const BlockInit& in, Generator& g)
    : c_fc(in.n_embd, 4 * in.n_embd, true, g, in.weight_std),
      c_proj(4 * in.n_embd, in.n_embd, true, g, in.proj_std),
      drop(in.dropout, in.dropout_gen) {
  register_module("c_fc", c_fc);
  register_module("c_proj", c_proj);
  register_module("drop", drop);
}

Tensor MLP::forward(const Tensor& x) const {
  // c_fc and the GELU fused: the activation comes out in the GEMM dtype, ready for c_proj.
  return drop.forward(c_proj.forward(ops::linear_gelu(x, c_fc.weight, c_fc.bias)));
}

CausalSelfAttention::CausalSelfAttention(const BlockInit& in, Generator& g)
    : n_head(in.n_head),
      c_attn(in.n_embd, 3 * in.n_embd, true, g, in.weight_std),
      c_proj(in.n_embd, in.n_embd, true, g, in.proj_std),
      drop(in.dropout, in.dropout_gen) {
  TS_CHECK(n_head > 0 && in.n_embd % n_head == 0,
           "CausalSelfAttention: n_embd {} is not divisible by n_head {}", in.n_embd, n_head);
  register_module("c_attn", c_attn);
  register_module("c_proj", c_proj);
  register_module("drop", drop);
}

Tensor CausalSelfAttention::forward(const Tensor& x) const {
  Tensor context = ops::attention(c_attn.forward(x), n_head);
  return drop.forward(c_proj.forward(context));
}

Block::Block(const BlockInit& in, Generator& g)
    : ln_1(in.n_embd), attn(in, g), ln_2(in.n_embd), mlp(in, g) {
  register_module("ln_1", ln_1);
  register_module("attn", attn);
  register_module("ln_2", ln_2);
  register_module("mlp", mlp);
}

DType gemm_input_dtype(const Tensor& x) {
  return autocast_dtype() == DType::bf16 ? DType::bf16 : x.dtype();
}

Tensor Block::forward(const Tensor& x) const {
  // The LayerNorms feed GEMMs only: under bf16 autocast they write bf16 directly (the same
  // rounding the GEMM's input cast would do), while the residual stream x, h stays f32.
  Tensor h = ops::add(x, attn.forward(ln_1.forward(x, gemm_input_dtype(x))));
  return ops::add(h, mlp.forward(ln_2.forward(h, gemm_input_dtype(h))));
}

}  // namespace tessera::nn
