#include "nn/transformer.h"

#include "ops/autocast.h"
#include "ops/ops.h"

namespace tessera::nn {

const char* mlp_kind_name(MlpKind kind) {
  return kind == MlpKind::gelu ? "gelu" : "swiglu";
}

namespace {
// SwiGLU's c_fc computes the gate and the up projection in one GEMM.
int64_t c_fc_width(const BlockInit& in) {
  return in.mlp == MlpKind::swiglu ? 2 * in.mlp_hidden : in.mlp_hidden;
}
}  // namespace

MLP::MLP(const BlockInit& in, Generator& g)
    : kind(in.mlp),
      c_fc(in.n_embd, c_fc_width(in), in.bias, g, in.weight_std),
      c_proj(in.mlp_hidden, in.n_embd, in.bias, g, in.proj_std),
      drop(in.dropout, in.dropout_gen) {
  register_module("c_fc", c_fc);
  register_module("c_proj", c_proj);
  register_module("drop", drop);
}

Tensor parallel_input(const Tensor& x, TensorParallelGroup* tp, const SequenceShard* seq) {
  if (seq) return sp_gather(x, *seq);
  return tp ? tp_copy(x, *tp) : x;
}

Tensor row_parallel_linear(const Linear& linear, const Tensor& x, TensorParallelGroup* tp,
                           const SequenceShard* seq) {
  if (!tp) return linear.forward(x);
  // The bias is added once, after the sum (every rank holds it whole).
  const Tensor partial = ops::linear(x, linear.weight);
  const Tensor y = seq ? sp_reduce_scatter(partial, *seq) : tp_reduce(partial, *tp);
  if (!linear.bias.defined()) return y;
  return ops::add(y, seq ? tp_copy(linear.bias, *tp) : linear.bias);
}

Tensor parallel_dropout(const Dropout& drop, const Tensor& y, const SequenceShard* seq) {
  return seq ? drop.forward_rows(y, seq->rows.begin, seq->total()) : drop.forward(y);
}

Tensor MLP::forward(const Tensor& x0, const SequenceShard* seq) const {
  const Tensor x = parallel_input(x0, tp, seq);
  // SwiGLU, or c_fc and the GELU fused (the activation comes out in the GEMM dtype, ready for
  // c_proj).
  const Tensor h = kind == MlpKind::swiglu ? ops::swiglu(c_fc.forward(x))
                                           : ops::linear_gelu(x, c_fc.weight, c_fc.bias);
  return parallel_dropout(drop, row_parallel_linear(c_proj, h, tp, seq), seq);
}

namespace {
int64_t qkv_width(const BlockInit& in) {
  TS_CHECK(in.n_head > 0 && in.n_embd % in.n_head == 0,
           "CausalSelfAttention: n_embd {} is not divisible by n_head {}", in.n_embd, in.n_head);
  TS_CHECK(in.n_kv_head > 0 && in.n_head % in.n_kv_head == 0,
           "CausalSelfAttention: n_kv_head {} does not divide n_head {}", in.n_kv_head, in.n_head);
  return (in.n_head + 2 * in.n_kv_head) * (in.n_embd / in.n_head);
}
}  // namespace

CausalSelfAttention::CausalSelfAttention(const BlockInit& in, Generator& g)
    : n_head(in.n_head),
      n_kv_head(in.n_kv_head),
      c_attn(in.n_embd, qkv_width(in), in.bias, g, in.weight_std),
      c_proj(in.n_embd, in.n_embd, in.bias, g, in.proj_std),
      drop(in.dropout, in.dropout_gen) {
  register_module("c_attn", c_attn);
  register_module("c_proj", c_proj);
  register_module("drop", drop);
}

Tensor CausalSelfAttention::forward(const Tensor& x, const BlockContext& ctx) const {
  Tensor qkv = c_attn.forward(parallel_input(x, tp, ctx.sequence_shard()));
  if (ctx.rotary && !ctx.context) qkv = ops::rope(qkv, *ctx.rotary, n_head, n_kv_head, ctx.start);
  Tensor context = ctx.context   ? context_parallel_attention(qkv, ctx)
                   : ctx.k_cache ? ops::cached_attention(qkv, n_head, n_kv_head, *ctx.k_cache,
                                                         *ctx.v_cache, ctx.start)
                                 : ops::attention(qkv, n_head, n_kv_head);
  return parallel_dropout(drop, row_parallel_linear(c_proj, context, tp, ctx.sequence_shard()),
                          ctx.sequence_shard());
}

Tensor CausalSelfAttention::context_parallel_attention(const Tensor& qkv,
                                                       const BlockContext& ctx) const {
  const ContextShard& s = *ctx.context;
  const int64_t B = s.batch, W = qkv.dim(-1);
  const int64_t q_width = W / (n_head + 2 * int64_t(n_kv_head)) * n_head;
  Tensor q[2], kv[2];
  for (int slot = 0; slot < 2; ++slot) {
    // Each chunk rotated at its own positions, then cut into queries and keys|values.
    Tensor part = ops::rows(qkv, slot * B, (slot + 1) * B);
    if (ctx.rotary) part = ops::rope(part, *ctx.rotary, n_head, n_kv_head, s.first_position(slot));
    q[slot] = ops::columns(part, 0, q_width);
    kv[slot] = ops::columns(part, q_width, W);
  }
  const Tensor whole = cp_gather_sequence(ops::concat_rows(kv[0], kv[1]), s);
  return ops::concat_rows(
      ops::attention_window(q[0], whole, n_head, n_kv_head, s.first_position(0)),
      ops::attention_window(q[1], whole, n_head, n_kv_head, s.first_position(1)));
}

Block::Block(const BlockInit& in, Generator& g)
    : ln_1(in.norm, in.n_embd, in.norm_eps),
      attn(in, g),
      ln_2(in.norm, in.n_embd, in.norm_eps),
      mlp(in, g) {
  register_module("ln_1", ln_1);
  register_module("attn", attn);
  register_module("ln_2", ln_2);
  register_module("mlp", mlp);
}

DType gemm_input_dtype(const Tensor& x) {
  return autocast_dtype() == DType::bf16 ? DType::bf16 : x.dtype();
}

Tensor Block::forward(const Tensor& x, const BlockContext& ctx) const {
  // The norms feed GEMMs only: under bf16 autocast LayerNorm writes bf16 directly (the same
  // rounding the GEMM's input cast would do), while the residual stream x, h stays f32.
  Tensor h = ops::add(x, attn.forward(ln_1.forward(x, gemm_input_dtype(x)), ctx));
  return ops::add(h, mlp.forward(ln_2.forward(h, gemm_input_dtype(h)), ctx.sequence_shard()));
}

}  // namespace tessera::nn
