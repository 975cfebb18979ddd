// GPT-2: token and learned position embeddings, n_layer pre-LN blocks, a final LayerNorm and
// an output head tied to the token embedding (logits = x · wte^T; no lm_head parameter).
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

#include "nn/transformer.h"

namespace tessera::nn {

// What backward recomputes instead of keeping (activation recomputation, autograd/checkpoint.h).
enum class Recompute {
  none,    // every op keeps what its backward needs until backward has used it
  blocks,  // each block keeps only its input and re-runs its forward during backward
};
// "none" | "blocks" (model.recompute); anything else throws an Error listing those.
Recompute recompute_from_name(const std::string& name);

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

// Parameter count without building the model:
// V C + context C + n_layer (12 C^2 + 13 C) + 2 C.
int64_t gpt_num_parameters(const GPTConfig& cfg);

// Training FLOPs (forward + backward) per token at sequence length seq_len, for MFU:
//   6 N + 12 n_layer C seq_len,
// where N = gpt_num_parameters - context C counts every weight that takes part in a matmul (the
// tied wte counts once, as the output head; wpe is a lookup), 6 = 2 (multiply-add) x 3 (forward,
// input gradient, weight gradient), and 12 n_layer C seq_len is the attention scores and the
// weighted sum of values (2 matmuls x 2 x seq_len C per layer, forward and 2x backward),
// counted without the causal mask's halving (the PaLM convention). LayerNorm, GELU, softmax
// and the loss are left out.
double gpt_flops_per_token(const GPTConfig& cfg, int64_t seq_len);

class GPT : public Module {
 private:
  GPTConfig cfg_;
  // Declared before the layers, which keep a pointer to it; the (const) forward draws from it.
  mutable Generator dropout_gen_;

 public:
  // Builds and initialises the model from g. The dropout stream is seeded by a draw from g.
  GPT(const GPTConfig& cfg, Generator& g);

  // ids i32 [B, T], T <= context -> logits f32 [B, T, vocab].
  Tensor forward(const Tensor& ids) const;
  // Block l of forward(): h[l]->forward(x), checkpointed (autograd::checkpoint, dropout
  // replayed) when config().recompute is blocks and grad mode is on.
  Tensor forward_block(size_t l, const Tensor& x) const;
  // Mean cross-entropy of forward(ids) against targets i32 [B, T] (-1 entries are ignored).
  Tensor loss(const Tensor& ids, const Tensor& targets) const;

  const GPTConfig& config() const { return cfg_; }
  // The stream dropout draws from; its (seed, offset) is part of a training checkpoint.
  Generator& dropout_generator() { return dropout_gen_; }

  Embedding wte, wpe;
  Dropout drop;
  std::vector<std::unique_ptr<Block>> h;
  LayerNorm ln_f;
};

}  // namespace tessera::nn
