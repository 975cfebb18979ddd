#include "nn/gpt.h"

#include <fmt/ranges.h>

#include <cmath>
#include <limits>

#include "autograd/checkpoint.h"
#include "autograd/grad_mode.h"
#include "ops/autocast.h"
#include "ops/ops.h"

namespace tessera::nn {

void GPTConfig::validate() const {
  TS_CHECK(n_layer > 0, "GPTConfig: n_layer must be positive, got {}", n_layer);
  TS_CHECK(n_head > 0, "GPTConfig: n_head must be positive, got {}", n_head);
  TS_CHECK(n_embd > 0 && n_embd % n_head == 0,
           "GPTConfig: n_embd {} must be a positive multiple of n_head {}", n_embd, n_head);
  TS_CHECK(context > 0, "GPTConfig: context must be positive, got {}", context);
  TS_CHECK(vocab_size > 0 && vocab_size <= std::numeric_limits<int32_t>::max(),
           "GPTConfig: vocab_size must be in [1, 2^31), got {}", vocab_size);
  TS_CHECK(dropout >= 0.f && dropout < 1.f, "GPTConfig: dropout must be in [0, 1), got {}",
           dropout);
}

Recompute recompute_from_name(const std::string& name) {
  if (name == "none") return Recompute::none;
  if (name == "blocks") return Recompute::blocks;
  fail("recompute: unknown mode '{}', expected \"none\" or \"blocks\"", name);
}

namespace {
struct Preset {
  const char* name;
  int n_layer, n_head;
  int64_t n_embd;
};
constexpr Preset kPresets[] = {{"gpt2-124m", 12, 12, 768},
                               {"gpt2-350m", 24, 16, 1024},
                               {"gpt2-774m", 36, 20, 1280},
                               {"gpt2-1.5b", 48, 25, 1600}};
}  // namespace

std::vector<std::string> gpt_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

GPTConfig gpt_preset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    GPTConfig c;
    c.n_layer = p.n_layer, c.n_head = p.n_head, c.n_embd = p.n_embd;
    c.context = 1024, c.vocab_size = 50257;
    return c;
  }
  fail("gpt_preset: unknown model '{}', expected one of: {}", name,
       fmt::join(gpt_preset_names(), ", "));
}

int64_t gpt_num_parameters(const GPTConfig& c) {
  const int64_t C = c.n_embd;
  return c.vocab_size * C + c.context * C + int64_t(c.n_layer) * (12 * C * C + 13 * C) + 2 * C;
}

double gpt_flops_per_token(const GPTConfig& c, int64_t seq_len) {
  const double matmul_params = double(gpt_num_parameters(c) - c.context * c.n_embd);
  return 6.0 * matmul_params + 12.0 * c.n_layer * double(c.n_embd) * double(seq_len);
}

namespace {
BlockInit block_init(const GPTConfig& c, Generator* dropout_gen) {
  c.validate();
  BlockInit in;
  in.n_embd = c.n_embd;
  in.n_head = c.n_head;
  in.weight_std = 0.02f;
  in.proj_std = 0.02f / std::sqrt(2.f * float(c.n_layer));
  in.dropout = c.dropout;
  in.dropout_gen = dropout_gen;
  return in;
}
}  // namespace

GPT::GPT(const GPTConfig& cfg, Generator& g)
    : cfg_((cfg.validate(), cfg)),
      dropout_gen_(g.next_u64()),
      wte(cfg.vocab_size, cfg.n_embd, g, 0.02f),
      wpe(cfg.context, cfg.n_embd, g, 0.02f),
      drop(cfg.dropout, &dropout_gen_),
      ln_f(cfg.n_embd) {
  register_module("wte", wte);
  register_module("wpe", wpe);
  register_module("drop", drop);
  const BlockInit init = block_init(cfg, &dropout_gen_);
  for (int i = 0; i < cfg.n_layer; ++i) {
    h.push_back(std::make_unique<Block>(init, g));
    register_module("h." + std::to_string(i), *h.back());
  }
  register_module("ln_f", ln_f);
}

Tensor GPT::forward(const Tensor& ids) const {
  TS_CHECK(ids.defined() && ids.dtype() == DType::i32 && ids.ndim() == 2,
           "GPT::forward: ids are {}, expected i32 [batch, time]", ids.desc());
  const int64_t T = ids.dim(1);
  TS_CHECK(T >= 1 && T <= cfg_.context,
           "GPT::forward: sequence length {} (ids {}) outside [1, context = {}]", T, ids.desc(),
           cfg_.context);
  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[size_t(t)] = int32_t(t);
  Tensor pos = Tensor::from_ints(positions, Shape{T}).to(ids.device());
  // [B, T, C] + [T, C]: the position rows broadcast over the batch.
  Tensor x = drop.forward(ops::add(wte.forward(ids), wpe.forward(pos)));
  for (size_t l = 0; l < h.size(); ++l) x = forward_block(l, x);
  return ops::linear(ln_f.forward(x, gemm_input_dtype(x)), wte.weight);
}

Tensor GPT::forward_block(size_t l, const Tensor& x) const {
  TS_CHECK(l < h.size(), "GPT::forward_block: block {} of {}", l, h.size());
  const Block& block = *h[l];
  if (cfg_.recompute == Recompute::none || !grad_enabled()) return block.forward(x);
  // Only the block's input is kept; its dropout masks are drawn again from the same offsets.
  return autograd::checkpoint("block_recompute",
                              [&block](const Tensor& in) { return block.forward(in); }, x,
                              block.parameters(), {&dropout_gen_});
}

Tensor GPT::loss(const Tensor& ids, const Tensor& targets) const {
  TS_CHECK(targets.defined() && targets.dtype() == DType::i32 && targets.shape() == ids.shape(),
           "GPT::loss: targets are {}, expected i32 of the ids' shape {}", targets.desc(),
           ids.shape().str());
  // Under bf16 autocast the head's backward GEMMs take the logits' gradient in bf16: the loss
  // writes it so (the same rounding, done once, half the bytes of [B*T, vocab]).
  const DType grad = autocast_dtype() == DType::bf16 ? DType::bf16 : DType::f32;
  return ops::cross_entropy(forward(ids), targets, -1, grad);
}

}  // namespace tessera::nn
