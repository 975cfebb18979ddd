// Llama 3, a kind of nn::Decoder: RMSNorm, rotary positions (with Llama 3's frequency scaling),
// grouped-query attention, a SwiGLU MLP, no biases, a head tied (3.2 1B, 3B) or not (3.1 8B,
// 70B). Our parameters use the decoder's names (nn/decoder.h) with q | k | v fused in c_attn and
// gate | up fused in c_fc; the Hugging Face adapter below splits and joins them.
//
// Hugging Face Llama files (transformers' LlamaForCausalLM):
//   model.embed_tokens.weight                 -> wte.weight
//   model.layers.{i}.input_layernorm.weight   -> h.{i}.ln_1.weight
//   model.layers.{i}.self_attn.{q,k,v}_proj.weight (rows stacked q | k | v) ->
//   h.{i}.attn.c_attn.weight model.layers.{i}.self_attn.o_proj.weight  -> h.{i}.attn.c_proj.weight
//   model.layers.{i}.post_attention_layernorm.weight -> h.{i}.ln_2.weight
//   model.layers.{i}.mlp.{gate,up}_proj.weight (rows stacked gate | up) -> h.{i}.mlp.c_fc.weight
//   model.layers.{i}.mlp.down_proj.weight     -> h.{i}.mlp.c_proj.weight
//   model.norm.weight                          -> ln_f.weight
//   lm_head.weight                             -> lm_head.weight (untied only; ignored if tied)
// The rotary convention is Hugging Face's (pairs (i, i + hs/2) of each head), so q_proj and
// k_proj load as they are, with no permutation.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "nn/decoder.h"

namespace tessera::nn {

struct LlamaConfig {
  int n_layer = 16;
  int n_head = 32;
  int n_kv_head = 8;
  int64_t n_embd = 2048;
  int64_t ffn_hidden = 8192;
  int64_t context = 131072;  // max_position_embeddings: rows of the rotary table
  int64_t vocab_size = 128256;
  double rope_theta = 500000;
  std::optional<ops::Llama3RopeScaling> rope_scaling;  // none, or Llama 3's (3.1: factor 8)
  float norm_eps = 1e-5f;
  bool tied_head = true;
};

// Meta's rule for the SwiGLU width when none is given: 2/3 of 4 C, rounded up to a multiple
// of 256.
int64_t llama_default_ffn_hidden(int64_t n_embd);

DecoderConfig llama_decoder_config(const LlamaConfig& cfg);

// Reads a Hugging Face config.json of model_type "llama" (what is not Llama's architecture,
// e.g. biases, another activation or rope_type, is refused naming the file and field).
LlamaConfig read_hf_llama_config(const std::string& path);
// Writes the config.json Hugging Face transformers needs to load what save_hf_llama_weights
// writes (atomically).
void write_hf_llama_config(const LlamaConfig& cfg, const std::string& path);

// Loads Hugging Face Llama weights into the model: `path` is a .safetensors file, a
// model.safetensors.index.json (sharded: model-0000k-of-0000n.safetensors), or a folder holding
// one of them. f32, bf16 and f16 tensors are converted to f32. Names, shapes and missing shard
// files are errors naming the file; nothing is modified then.
void load_hf_llama_weights(Module& model, const std::string& path);

// Writes the model as Hugging Face Llama safetensors into `folder` in `dtype` (f32 or bf16):
// one model.safetensors, or shards of at most max_shard_bytes each with their index.
void save_hf_llama_weights(const Module& model, const std::string& folder, DType dtype,
                           int64_t max_shard_bytes = int64_t(5) << 30);

// model.init_weights for a Llama: Hugging Face Llama files (detected by their names), or our
// own safetensors (save_weights). Returns the format's name.
std::string load_any_llama_weights(Module& model, const std::string& path);

}  // namespace tessera::nn
