// The model kinds `model.kind` selects: each brings whether it is a language model (trains on
// token data) or an image classifier, its presets, how the config's model keys become its
// network's settings, and how a weights file of its kind is loaded. Everything that depends on
// the kind asks this table; nothing else compares kind names.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "nn/decoder.h"
#include "train/config.h"

namespace tessera::train {

// A named size. Zero (or "") fields keep the kind's default for that key.
struct ModelPreset {
  std::string_view name;
  int64_t n_layer, n_head, n_kv_head, n_embd, ffn_hidden, context, vocab_size;
  double rope_theta = 0, rope_scaling = 0;
  std::string_view head = "";
};

struct ModelKind {
  std::string_view name;         // model.kind
  std::string_view description;  // for docs and errors
  bool language_model;           // token data (text, shards); else images (fashion-mnist)
  // Reads the decoder-option keys (n_kv_head, ffn_hidden, rope_theta, rope_scaling, head).
  bool decoder_options;
  std::span<const ModelPreset> presets;
  // Language models: builds and initialises from g the decoder the resolved model keys
  // describe (presets already applied).
  std::unique_ptr<nn::Decoder> (*build)(const ModelConfig& m, Generator& g) = nullptr;
  // Loads a weights file of this kind into the model (model.init_weights), detecting the
  // format from the content; returns the format's name for messages.
  std::string (*load_weights)(nn::Module& model, const std::string& path) = nullptr;
};

std::span<const ModelKind> model_kinds();
// The kind named `name`; an Error listing the kinds otherwise.
const ModelKind& model_kind(std::string_view name);
// The preset `name` of any kind (nullptr when none has it), and which kind it belongs to.
const ModelPreset* find_model_preset(std::string_view name, const ModelKind** kind = nullptr);

// Builds and initialises the decoder of a language-model config from the config's seed stream.
std::unique_ptr<nn::Decoder> make_decoder(const Config& cfg, Generator& g);

}  // namespace tessera::train
