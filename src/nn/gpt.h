// GPT-2, a kind of nn::Decoder: token and learned position embeddings, n_layer pre-LN blocks
// (LayerNorm, multi-head attention, GELU MLP, biases), a final LayerNorm and an output head tied
// to the token embedding (logits = x · wte^T; no lm_head parameter).
//
// Parameter names follow Hugging Face GPT-2 without the "transformer." prefix (wte.weight,
// wpe.weight, h.{i}.ln_1.weight, h.{i}.attn.c_attn.weight, ..., ln_f.bias), in that order;
// our Linear weights are [out, in] (Hugging Face's Conv1D stores [in, out]).
//
// Initialisation (GPT-2's): normal(0, 0.02) for Linear and embedding weights, zeros for biases,
// ones / zeros for LayerNorm, and normal(0, 0.02 / sqrt(2 n_layer)) for the residual
// projections attn.c_proj.weight and mlp.c_proj.weight; everything drawn from the caller's
// Generator in parameter order, so a seed fixes the model.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/decoder.h"

namespace tessera::nn {

struct GPTConfig {
  int n_layer = 12;
  int n_head = 12;
  int64_t n_embd = 768;
  int64_t context = 1024;  // maximum sequence length (rows of wpe)
  int64_t vocab_size = 50257;
  float dropout = 0.f;  // on embeddings and residual branches, in training mode only
  // Training-time memory only: the same gradients bit for bit, one more forward of each block.
  Recompute recompute = Recompute::none;

  // Throws Error naming the first field that is out of range.
  void validate() const;
};

// "gpt2-124m" (12 layers, 12 heads, 768), "gpt2-350m" (24, 16, 1024), "gpt2-774m" (36, 20,
// 1280), "gpt2-1.5b" (48, 25, 1600); all with context 1024 and vocab 50257. Unknown names throw
// an Error listing the valid ones.
GPTConfig gpt_preset(const std::string& name);
std::vector<std::string> gpt_preset_names();

// The decoder these settings describe (GPT-2's components, MLP width 4 n_embd).
DecoderConfig gpt_decoder_config(const GPTConfig& cfg);

// Parameter count without building the model:
// V C + context C + n_layer (12 C^2 + 13 C) + 2 C.
int64_t gpt_num_parameters(const GPTConfig& cfg);

// decoder_flops_per_token (nn/decoder.h) of the GPT: 6 N + 12 n_layer C seq_len with N the
// parameters without wpe (the tied wte counts once, as the head).
double gpt_flops_per_token(const GPTConfig& cfg, int64_t seq_len);

class GPT : public Decoder {
 private:
  GPTConfig cfg_;

 public:
  // Builds and initialises the model from g (see Decoder).
  GPT(const GPTConfig& cfg, Generator& g);
  const GPTConfig& config() const { return cfg_; }
};

}  // namespace tessera::nn
