// The one causal language model every model kind is: a token embedding (plus learned positions,
// or rotary ones inside attention), a list of blocks, a final norm and an output head; the loss
// is the mean cross-entropy of the next token. Kinds (GPT-2 in nn/gpt.h, Llama in nn/llama.h)
// differ only in their DecoderConfig: which norm, positions, MLP and attention heads, biases,
// head tying, initialisation. The trainer, ZeRO-3 (stages), recomputation and generation drive
// every kind through this class, so there is one forward.
//
// Parameter names: wte.weight, [wpe.weight], h.{i}.ln_1.weight, [h.{i}.ln_1.bias],
// h.{i}.attn.c_attn.weight, ..., ln_f.weight, [ln_f.bias], [lm_head.weight], in that order (GPT-2's
// Hugging Face names without "transformer."; each kind's weight adapter maps its own file names).
// Linear weights are [out, in].
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nn/stages.h"
#include "nn/tensor_parallel.h"
#include "nn/transformer.h"
#include "ops/rope_table.h"

namespace tessera::nn {

// What backward recomputes instead of keeping (activation recomputation, autograd/checkpoint.h).
enum class Recompute {
  none,    // every op keeps what its backward needs until backward has used it
  blocks,  // each block keeps only its input and re-runs its forward during backward
};
// "none" | "blocks" (model.recompute); anything else throws an Error listing those.
Recompute recompute_from_name(const std::string& name);

enum class PositionKind {
  learned,  // wpe [context, C] added to the token embedding (GPT-2)
  rotary,   // q and k rotated by position inside attention (RoPE: Llama)
};

struct DecoderConfig {
  int n_layer = 12;
  int n_head = 12;
  int n_kv_head = 12;  // key/value heads: n_head, or a divisor of it (grouped-query attention)
  int64_t n_embd = 768;
  int64_t mlp_hidden = 3072;  // F: the MLP's inner width
  int64_t context = 1024;     // longest sequence (rows of wpe, or of the rotary table)
  int64_t vocab_size = 50257;
  NormKind norm = NormKind::layer_norm;
  float norm_eps = 1e-5f;
  PositionKind positions = PositionKind::learned;
  double rope_theta = 10000;
  // Llama 3's frequency scaling of the rotary table (ops/rope_table.h), or none.
  std::optional<ops::Llama3RopeScaling> rope_scaling;
  MlpKind mlp = MlpKind::gelu;
  bool bias = true;        // on every Linear in the blocks
  bool tied_head = true;   // logits = x · wte^T (no lm_head parameter)
  float init_std = 0.02f;  // normal(0, init_std) for Linear and embedding weights; residual
                           // projections get init_std / sqrt(2 n_layer) (GPT-2's scheme)
  float dropout = 0.f;     // on embeddings and residual branches, in training mode only
  // Training-time memory only: the same gradients bit for bit, one more forward of each block.
  Recompute recompute = Recompute::none;

  int64_t head_size() const { return n_embd / n_head; }
  // Throws Error naming the first field that is out of range.
  void validate() const;
};

// Parameters without building the model.
int64_t decoder_num_parameters(const DecoderConfig& cfg);

// Training FLOPs (forward + backward) per token at sequence length seq_len, for MFU:
//   6 N + 12 n_layer C seq_len,
// where N counts every weight that takes part in a matmul (a tied wte counts once, as the head;
// wpe and an untied head's input embedding are lookups), 6 = 2 (multiply-add) x 3 (forward,
// input gradient, weight gradient), and 12 n_layer C seq_len is the attention scores and the
// weighted sum of values (2 matmuls x 2 x seq_len C per layer, forward and 2x backward), counted
// without the causal mask's halving (the PaLM convention). Norms, activations, rotations,
// softmax and the loss are left out.
double decoder_flops_per_token(const DecoderConfig& cfg, int64_t seq_len);

// Generation's key/value cache: every block's keys and values for the positions so far, so a
// new token attends to them without the prefix being run again (Decoder::forward_cached).
struct KVCache {
  std::vector<Tensor> k, v;  // per block: f32 [B, n_kv_head, capacity, hs]
  int64_t length = 0;        // positions filled
  int64_t capacity() const { return k.empty() ? 0 : k[0].dim(2); }
};

class Decoder : public Module {
 private:
  DecoderConfig cfg_;
  // Declared before the layers, which keep a pointer to it; the (const) forward draws from it.
  mutable Generator dropout_gen_;
  // Rotary positions: the cos/sin table (ops::rope), built once on the host, and its copy on
  // the device the model runs on (made on first use there).
  Tensor rotary_host_;
  mutable Tensor rotary_device_;
  // Tensor parallelism (shard()): the group, this rank's vocabulary rows, and each sharded
  // parameter's split (by TensorImpl, so it survives to(device) re-pointing storage).
  TensorParallelGroup* tp_ = nullptr;
  bool sequence_parallel_ = false;
  TensorParallelGroup* cp_ = nullptr;
  // The context shard of a forward over ids [2B, Tc] under context parallelism (else none).
  std::optional<ContextShard> context_for(const Tensor& ids) const;
  // embed() of this rank's two chunks: each at its own positions.
  Tensor embed_chunks(const Tensor& ids, const ContextShard& s) const;
  // Pipeline parallelism (keep_stages()): the stages' block bounds and which stages are here.
  std::vector<int> stage_bounds_, kept_stages_;
  std::vector<std::string> whole_order_;
  // The sequence shard of a forward over ids under sequence parallelism (else none).
  std::optional<SequenceShard> sequence_for(const Tensor& ids) const;
  IndexRange vocab_part_;
  std::vector<std::pair<const void*, TensorShard>> shards_;

  // forward()'s logits before any gathering (this rank's vocabulary columns).
  Tensor local_logits(const Tensor& ids, StageHooks* stages) const;
  // The loss of (this rank's columns of) the logits against targets.
  Tensor loss_from_logits(const Tensor& logits, const Tensor& targets) const;
  // embed() under sequence parallelism: this rank's rows [n_r, C] (positions from 0).
  Tensor embed_rows(const Tensor& ids, const SequenceShard& s) const;

 public:
  // Builds and initialises the model from g, drawing in parameter order (so a seed fixes the
  // model). The dropout stream is seeded by a first draw from g.
  Decoder(const DecoderConfig& cfg, Generator& g);

  // ids i32 [B, T], T <= context -> logits f32 [B, T, vocab]. With `stages` (ZeRO-3), every
  // stage of parameter_units() runs between stages->enter(k) and stages->exit(k, ...). Under
  // tensor parallelism the whole logits are gathered on every rank (loss() never does).
  Tensor forward(const Tensor& ids, StageHooks* stages = nullptr) const;
  // Mean cross-entropy of forward(ids) against targets i32 [B, T] (-1 entries are ignored).
  Tensor loss(const Tensor& ids, const Tensor& targets, StageHooks* stages = nullptr) const;

  // Generation: the logits of ids [B, T_new] that follow the cache's positions, whose keys and
  // values are appended to it (start with make_cache; call under NoGradGuard).
  Tensor forward_cached(const Tensor& ids, KVCache& cache) const;
  // An empty cache for `batch` sequences of up to `capacity` (<= context) positions.
  KVCache make_cache(int64_t batch, int64_t capacity, Device device) const;

  // The three parts of forward(), in order. `start`: the position of ids' first column.
  Tensor embed(const Tensor& ids, int64_t start = 0) const;  // -> [B, T, C]
  // Block l: h[l]->forward(x), checkpointed (autograd::checkpoint, dropout replayed) when
  // recompute is blocks and grad mode is on.
  Tensor forward_block(size_t l, const Tensor& x, BlockContext ctx = {}) const;
  // Final norm and output projection -> logits f32 (this rank's vocabulary columns under
  // tensor parallelism; from this rank's rows [n_r, C] with `seq`, every row's logits).
  Tensor head(const Tensor& x, const SequenceShard* seq = nullptr) const;

  // Pipeline parallelism: the model as stages of consecutive blocks, bounds[s] .. bounds[s + 1]
  // for stage s (bounds: S + 1 entries from 0 to n_layer); stage 0 also holds the embeddings,
  // the last stage the final norm and the head (and, when tied, its own copy of wte, whose
  // gradient the trainer sums with stage 0's). keep_stages() drops every parameter the given
  // stages do not use (call after building, loading and shard(), before to(device)); only
  // forward_stage() runs afterwards.
  void keep_stages(const std::vector<int>& stages, const std::vector<int>& bounds);
  // Stage s of micro-batch ids [B, T]: from the ids (stage 0) or the previous stage's output x
  // to this stage's output, or on the last stage the loss against targets.
  Tensor forward_stage(int s, const Tensor& ids, const Tensor& targets, const Tensor& x) const;
  int num_stages() const { return int(stage_bounds_.size()) - 1; }  // 0: not split
  // Every parameter name of the whole model, in parameters() order before keep_stages().
  const std::vector<std::string>& whole_parameter_order() const { return whole_order_; }
  bool holds_stage(int s) const;
  // The shape of a stage's output activation for micro-batches of [batch, seq_len] ids: the
  // residual stream [batch, seq_len, C], or this rank's rows [n_r, C] under sequence
  // parallelism.
  Shape stage_output_shape(int64_t batch, int64_t seq_len) const;
  // A tied wte split over pipeline stages lives on the first stage (the embedding) and the last
  // (the head): tied_embedding() is it on a rank holding either (the trainer sums the two
  // copies' gradients every step), tied_copy() only on a rank holding the last but not the
  // first (the gradient norm counts it on the first); else null.
  const Tensor* tied_embedding() const;
  const Tensor* tied_copy() const;

  // Tensor parallelism (nn/tensor_parallel.h): keeps this rank's share of the weights (its
  // heads, MLP hidden units and vocabulary rows) and runs the layers split over `group` from
  // then on. Call once, after building and loading weights, before to(device) and before an
  // engine flattens the parameters. n_head and n_kv_head must be multiples of the group size.
  // With sequence_parallel, training and evaluation forwards keep the norm and dropout regions
  // split by rows too (nn/tensor_parallel.h SequenceShard); generation does not.
  void shard(TensorParallelGroup& group, bool sequence_parallel = false);
  // Context parallelism over `group` (nn/tensor_parallel.h ContextShard): from then on training
  // and evaluation forwards take ids [2B, Tc], this rank's two chunks of each sequence, and
  // their loss is the mean over those tokens. Generation is unaffected.
  void set_context_parallel(TensorParallelGroup& group) { cp_ = &group; }
  TensorParallelGroup* tensor_parallel() const { return tp_; }
  // Every parameter's split over the group, in parameters() order (all replicated, with the
  // parameters' own shapes, when not sharded).
  std::vector<TensorShard> tensor_shards() const;
  // The vocabulary ids this rank's embedding rows and logits cover ([0, vocab) unsharded).
  IndexRange vocab_part() const { return vocab_part_; }

  // ZeRO-3: units are the embeddings, each block, and the head's own parameters (ln_f, lm_head);
  // stages are the embedding, each block, then the head (with the embedding's unit again when
  // the head is tied to it).
  ParameterUnits parameter_units() const;

  const DecoderConfig& decoder_config() const { return cfg_; }
  // The rotary table on `device` (null with learned positions).
  const Tensor* rotary_on(Device device) const;
  // The stream dropout draws from; its (seed, offset) is part of a training checkpoint.
  Generator& dropout_generator() { return dropout_gen_; }

  Embedding wte;
  std::unique_ptr<Embedding> wpe;  // learned positions only
  Dropout drop;
  std::vector<std::unique_ptr<Block>> h;
  Norm ln_f;
  std::unique_ptr<Linear> lm_head;  // untied head only: [vocab, C]
};

}  // namespace tessera::nn
