#include "nn/gpt.h"

#include <fmt/ranges.h>

#include <limits>

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

DecoderConfig gpt_decoder_config(const GPTConfig& c) {
  c.validate();
  DecoderConfig d;
  d.n_layer = c.n_layer;
  d.n_head = d.n_kv_head = c.n_head;
  d.n_embd = c.n_embd;
  d.mlp_hidden = 4 * c.n_embd;
  d.context = c.context;
  d.vocab_size = c.vocab_size;
  d.norm = NormKind::layer_norm;
  d.norm_eps = 1e-5f;
  d.positions = PositionKind::learned;
  d.mlp = MlpKind::gelu;
  d.bias = true;
  d.tied_head = true;
  d.init_std = 0.02f;
  d.dropout = c.dropout;
  d.recompute = c.recompute;
  return d;
}

int64_t gpt_num_parameters(const GPTConfig& c) {
  return decoder_num_parameters(gpt_decoder_config(c));
}

double gpt_flops_per_token(const GPTConfig& c, int64_t seq_len) {
  return decoder_flops_per_token(gpt_decoder_config(c), seq_len);
}

GPT::GPT(const GPTConfig& cfg, Generator& g) : Decoder(gpt_decoder_config(cfg), g), cfg_(cfg) {}

}  // namespace tessera::nn
