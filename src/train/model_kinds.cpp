#include "train/model_kinds.h"

#include <fmt/ranges.h>

#include "nn/gpt.h"
#include "nn/llama.h"
#include "nn/weights.h"

namespace tessera::train {
namespace {

// ---- gpt ----

const ModelPreset kGptPresets[] = {
    {"gpt2-124m", 12, 12, 0, 768, 0, 1024, 50257},
    {"gpt2-350m", 24, 16, 0, 1024, 0, 1024, 50257},
    {"gpt2-774m", 36, 20, 0, 1280, 0, 1024, 50257},
    {"gpt2-1.5b", 48, 25, 0, 1600, 0, 1024, 50257},
};

nn::GPTConfig gpt_config(const ModelConfig& m) {
  nn::GPTConfig g;
  g.n_layer = int(m.n_layer);
  g.n_head = int(m.n_head);
  g.n_embd = m.n_embd;
  g.context = m.context;
  g.vocab_size = m.vocab_size;
  g.dropout = float(m.dropout);
  g.recompute = nn::recompute_from_name(m.recompute);
  return g;
}

// GPT keeps its own type: llm.c checkpoints and Hugging Face GPT-2 files load into it.
std::unique_ptr<nn::Decoder> build_gpt(const ModelConfig& m, Generator& g) {
  return std::make_unique<nn::GPT>(gpt_config(m), g);
}

std::string load_gpt_weights(nn::Module& model, const std::string& path) {
  return nn::weights_format_name(nn::load_any_weights(model, path));
}

// ---- llama ----

// Llama 3's shapes (Meta's params.json / Hugging Face config.json of each model).
const ModelPreset kLlamaPresets[] = {
    // A tiny model for tests and the KJV: 4 layers, GQA 4:2, vocabulary set by the tokenizer.
    {"llama-tiny", 4, 4, 2, 128, 352, 256, 4096, 500000, 0, "tied"},
    {"llama3.2-1b", 16, 32, 8, 2048, 8192, 131072, 128256, 500000, 32, "tied"},
    {"llama3.2-3b", 28, 24, 8, 3072, 8192, 131072, 128256, 500000, 32, "tied"},
    {"llama3.1-8b", 32, 32, 8, 4096, 14336, 131072, 128256, 500000, 8, "untied"},
    {"llama3.1-70b", 80, 64, 8, 8192, 28672, 131072, 128256, 500000, 8, "untied"},
};

nn::DecoderConfig llama_decoder(const ModelConfig& m) {
  nn::LlamaConfig l;
  l.n_layer = int(m.n_layer);
  l.n_head = int(m.n_head);
  l.n_kv_head = int(m.n_kv_head > 0 ? m.n_kv_head : m.n_head);
  l.n_embd = m.n_embd;
  l.ffn_hidden = m.ffn_hidden > 0 ? m.ffn_hidden : nn::llama_default_ffn_hidden(m.n_embd);
  l.context = m.context;
  l.vocab_size = m.vocab_size;
  if (m.rope_theta > 0) l.rope_theta = m.rope_theta;
  if (m.rope_scaling > 0) {
    ops::Llama3RopeScaling s;  // Llama 3.1's frequency factors and original context
    s.factor = m.rope_scaling;
    l.rope_scaling = s;
  }
  l.tied_head = m.head != "untied";
  nn::DecoderConfig d = nn::llama_decoder_config(l);
  d.dropout = float(m.dropout);
  d.recompute = nn::recompute_from_name(m.recompute);
  return d;
}

std::unique_ptr<nn::Decoder> build_llama(const ModelConfig& m, Generator& g) {
  return std::make_unique<nn::Decoder>(llama_decoder(m), g);
}

std::string load_llama_weights(nn::Module& model, const std::string& path) {
  return nn::load_any_llama_weights(model, path);
}

// ---- classifiers ----

std::string load_tessera_weights(nn::Module& model, const std::string& path) {
  nn::load_weights(model, path);
  return "tessera safetensors";
}

const ModelKind kKinds[] = {
    {"gpt", "GPT-2 language model (LayerNorm, learned positions, GELU MLP, tied head)", true, false,
     kGptPresets, &build_gpt, &load_gpt_weights},
    {"llama", "Llama 3 language model (RMSNorm, rotary positions, SwiGLU, grouped-query attention)",
     true, true, kLlamaPresets, &build_llama, &load_llama_weights},
    {"mlp", "MLP image classifier", false, false, {}, nullptr, &load_tessera_weights},
    {"cnn", "CNN image classifier", false, false, {}, nullptr, &load_tessera_weights},
};

}  // namespace

std::span<const ModelKind> model_kinds() {
  return kKinds;
}

const ModelKind& model_kind(std::string_view name) {
  std::vector<std::string_view> names;
  for (const ModelKind& k : kKinds) {
    if (k.name == name) return k;
    names.push_back(k.name);
  }
  fail("model.kind = '{}' is not a model kind: expected one of {}", name, fmt::join(names, ", "));
}

const ModelPreset* find_model_preset(std::string_view name, const ModelKind** kind) {
  for (const ModelKind& k : kKinds) {
    for (const ModelPreset& p : k.presets) {
      if (p.name != name) continue;
      if (kind) *kind = &k;
      return &p;
    }
  }
  return nullptr;
}

std::unique_ptr<nn::Decoder> make_decoder(const Config& cfg, Generator& g) {
  const ModelKind& kind = model_kind(cfg.model.kind);
  TS_CHECK(kind.build, "model.kind = '{}' is not a language model", kind.name);
  return kind.build(cfg.model, g);
}

}  // namespace tessera::train
