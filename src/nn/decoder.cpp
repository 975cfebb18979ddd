#include "nn/decoder.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "autograd/checkpoint.h"
#include "autograd/grad_mode.h"
#include "ops/autocast.h"
#include "ops/ops.h"

namespace tessera::nn {

Recompute recompute_from_name(const std::string& name) {
  if (name == "none") return Recompute::none;
  if (name == "blocks") return Recompute::blocks;
  fail("recompute: unknown mode '{}', expected \"none\" or \"blocks\"", name);
}

void DecoderConfig::validate() const {
  TS_CHECK(n_layer > 0, "DecoderConfig: n_layer must be positive, got {}", n_layer);
  TS_CHECK(n_head > 0, "DecoderConfig: n_head must be positive, got {}", n_head);
  TS_CHECK(n_embd > 0 && n_embd % n_head == 0,
           "DecoderConfig: n_embd {} must be a positive multiple of n_head {}", n_embd, n_head);
  TS_CHECK(n_kv_head > 0 && n_head % n_kv_head == 0,
           "DecoderConfig: n_kv_head {} must divide n_head {}", n_kv_head, n_head);
  TS_CHECK(mlp_hidden > 0, "DecoderConfig: mlp_hidden must be positive, got {}", mlp_hidden);
  TS_CHECK(context > 0, "DecoderConfig: context must be positive, got {}", context);
  TS_CHECK(vocab_size > 0 && vocab_size <= std::numeric_limits<int32_t>::max(),
           "DecoderConfig: vocab_size must be in [1, 2^31), got {}", vocab_size);
  TS_CHECK(norm_eps >= 0.f, "DecoderConfig: norm_eps must be >= 0, got {}", norm_eps);
  TS_CHECK(positions == PositionKind::learned || (head_size() % 2 == 0 && rope_theta > 0),
           "DecoderConfig: rotary positions need an even head size (got {}) and rope_theta > 0 "
           "(got {})",
           head_size(), rope_theta);
  TS_CHECK(init_std > 0.f, "DecoderConfig: init_std must be positive, got {}", init_std);
  TS_CHECK(dropout >= 0.f && dropout < 1.f, "DecoderConfig: dropout must be in [0, 1), got {}",
           dropout);
}

int64_t decoder_num_parameters(const DecoderConfig& c) {
  const int64_t C = c.n_embd, hs = c.head_size(), F = c.mlp_hidden;
  const int64_t qkv = (c.n_head + 2 * int64_t(c.n_kv_head)) * hs;
  const int64_t fc = c.mlp == MlpKind::swiglu ? 2 * F : F;
  const int64_t norm = c.norm == NormKind::layer_norm ? 2 * C : C;
  int64_t block = C * qkv + C * C + C * fc + F * C + 2 * norm;
  if (c.bias) block += qkv + C + fc + C;
  int64_t n = c.vocab_size * C + int64_t(c.n_layer) * block + norm;
  if (c.positions == PositionKind::learned) n += c.context * C;
  if (!c.tied_head) n += c.vocab_size * C;
  return n;
}

double decoder_flops_per_token(const DecoderConfig& c, int64_t seq_len) {
  double lookups = 0;
  if (c.positions == PositionKind::learned) lookups += double(c.context * c.n_embd);
  if (!c.tied_head) lookups += double(c.vocab_size * c.n_embd);  // wte is then only a lookup
  const double matmul_params = double(decoder_num_parameters(c)) - lookups;
  return 6.0 * matmul_params + 12.0 * c.n_layer * double(c.n_embd) * double(seq_len);
}

namespace {
BlockInit block_init(const DecoderConfig& c, Generator* dropout_gen) {
  c.validate();
  BlockInit in;
  in.n_embd = c.n_embd;
  in.n_head = c.n_head;
  in.n_kv_head = c.n_kv_head;
  in.mlp_hidden = c.mlp_hidden;
  in.norm = c.norm;
  in.norm_eps = c.norm_eps;
  in.mlp = c.mlp;
  in.bias = c.bias;
  in.weight_std = c.init_std;
  in.proj_std = c.init_std / std::sqrt(2.f * float(c.n_layer));
  in.dropout = c.dropout;
  in.dropout_gen = dropout_gen;
  return in;
}
}  // namespace

Decoder::Decoder(const DecoderConfig& cfg, Generator& g)
    : cfg_((cfg.validate(), cfg)),
      dropout_gen_(g.next_u64()),
      wte(cfg.vocab_size, cfg.n_embd, g, cfg.init_std),
      drop(cfg.dropout, &dropout_gen_),
      ln_f(cfg.norm, cfg.n_embd, cfg.norm_eps) {
  vocab_part_ = {0, cfg.vocab_size};
  if (cfg.positions == PositionKind::rotary)
    rotary_host_ = ops::rope_table(cfg.context, cfg.head_size(), cfg.rope_theta, cfg.rope_scaling);
  register_module("wte", wte);
  if (cfg.positions == PositionKind::learned) {
    wpe = std::make_unique<Embedding>(cfg.context, cfg.n_embd, g, cfg.init_std);
    register_module("wpe", *wpe);
  }
  register_module("drop", drop);
  const BlockInit init = block_init(cfg, &dropout_gen_);
  for (int i = 0; i < cfg.n_layer; ++i) {
    h.push_back(std::make_unique<Block>(init, g));
    register_module("h." + std::to_string(i), *h.back());
  }
  register_module("ln_f", ln_f);
  if (!cfg.tied_head) {
    lm_head = std::make_unique<Linear>(cfg.n_embd, cfg.vocab_size, false, g, cfg.init_std);
    register_module("lm_head", *lm_head);
  }
}

Tensor Decoder::embed(const Tensor& ids, int64_t start) const {
  TS_CHECK(ids.defined() && ids.dtype() == DType::i32 && ids.ndim() == 2,
           "Decoder::forward: ids are {}, expected i32 [batch, time]", ids.desc());
  const int64_t T = ids.dim(1);
  TS_CHECK(T >= 1 && start >= 0 && start + T <= cfg_.context,
           "Decoder::forward: positions {} .. {} (ids {}) outside [0, context = {})", start,
           start + T - 1, ids.desc(), cfg_.context);
  // Under tensor parallelism each rank looks up the ids its rows hold (zeros for the others')
  // and the sum over the group is the whole lookup.
  Tensor x =
      tp_ ? tp_reduce(ops::embedding(wte.weight, ids, vocab_part_.begin), *tp_) : wte.forward(ids);
  if (wpe) {
    std::vector<int32_t> positions(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) positions[size_t(t)] = int32_t(start + t);
    // On the ids' device (a CPU tensor here made every ZeRO-3 step on a GPU fail; found by the
    // emulated CUDA device). [B, T, C] + [T, C]: the position rows broadcast over the batch.
    x = ops::add(x, wpe->forward(Tensor::from_ints(positions, Shape{T}).to(ids.device())));
  }
  return drop.forward(x);
}

Tensor Decoder::embed_rows(const Tensor& ids, const SequenceShard& s) const {
  // The vocabulary shards' lookups, summed and cut to this rank's rows in one reduce-scatter.
  Tensor x = sp_reduce_scatter(ops::embedding(wte.weight, ids, vocab_part_.begin), s);
  if (wpe) {
    std::vector<int32_t> positions;
    for (int64_t r = s.rows.begin; r < s.rows.end; ++r) positions.push_back(int32_t(r % s.seq_len));
    const Tensor pos = Tensor::from_ints(positions, Shape{s.rows.size()}).to(ids.device());
    // Each rank adds the rows of its own positions: the table's gradient is summed over ranks.
    x = ops::add(x, ops::embedding(tp_copy(wpe->weight, *tp_), pos));
  }
  return drop.forward_rows(x, s.rows.begin, s.total());
}

const Tensor* Decoder::rotary_on(Device device) const {
  if (!rotary_host_.defined()) return nullptr;
  if (device.is_cpu()) return &rotary_host_;
  if (!rotary_device_.defined() || rotary_device_.device() != device)
    rotary_device_ = rotary_host_.to(device);
  return &rotary_device_;
}

Tensor Decoder::forward_block(size_t l, const Tensor& x, BlockContext ctx) const {
  TS_CHECK(l < h.size(), "Decoder::forward_block: block {} of {}", l, h.size());
  const Block& block = *h[l];
  ctx.rotary = rotary_on(x.device());
  if (cfg_.recompute == Recompute::none || !grad_enabled()) return block.forward(x, ctx);
  // Only the block's input is kept; its dropout masks are drawn again from the same offsets.
  return autograd::checkpoint("block_recompute",
                              [&block, ctx](const Tensor& in) { return block.forward(in, ctx); }, x,
                              block.parameters(), {&dropout_gen_});
}

KVCache Decoder::make_cache(int64_t batch, int64_t capacity, Device device) const {
  TS_CHECK(batch > 0 && capacity > 0 && capacity <= cfg_.context,
           "Decoder::make_cache: {} sequences of {} positions: expected batch > 0 and "
           "capacity in [1, context = {}]",
           batch, capacity, cfg_.context);
  KVCache c;
  const int kv_heads = h.front()->attn.n_kv_head;  // this rank's, under tensor parallelism
  const Shape shape{batch, kv_heads, capacity, cfg_.head_size()};
  for (size_t l = 0; l < h.size(); ++l) {
    c.k.push_back(Tensor::zeros(shape, DType::f32, device));
    c.v.push_back(Tensor::zeros(shape, DType::f32, device));
  }
  return c;
}

Tensor Decoder::forward_cached(const Tensor& ids, KVCache& cache) const {
  TS_CHECK(cache.k.size() == h.size(),
           "Decoder::forward_cached: the cache has {} layers, the "
           "model {}: make it with make_cache",
           cache.k.size(), h.size());
  TS_CHECK(ids.defined() && ids.ndim() == 2 && cache.length + ids.dim(1) <= cache.capacity(),
           "Decoder::forward_cached: ids {} after {} cached positions overflow the cache's {}",
           ids.desc(), cache.length, cache.capacity());
  Tensor x = embed(ids, cache.length);
  for (size_t l = 0; l < h.size(); ++l)
    x = forward_block(l, x, BlockContext{cache.length, &cache.k[l], &cache.v[l], nullptr, {}, {}});
  cache.length += ids.dim(1);
  const Tensor logits = head(x);
  return tp_ ? tp_gather_last_dim(logits, *tp_, cfg_.vocab_size) : logits;
}

Tensor Decoder::head(const Tensor& x, const SequenceShard* seq) const {
  const Tensor& w = lm_head ? lm_head->weight : wte.weight;
  const Tensor normed = ln_f.forward(x, gemm_input_dtype(x));
  return ops::linear(parallel_input(normed, tp_, seq), w);
}

Tensor Decoder::forward(const Tensor& ids, StageHooks* stages) const {
  const Tensor logits = local_logits(ids, stages);
  return tp_ ? tp_gather_last_dim(logits, *tp_, cfg_.vocab_size) : logits;
}

Tensor Decoder::local_logits(const Tensor& ids, StageHooks* stages) const {
  // Stage k between enter(k) and exit(k): the ZeRO-3 engine gathers the stage's parameters.
  auto enter = [stages](int k) {
    if (stages) stages->enter(k);
  };
  auto exit = [stages](int k, const Tensor& x) { return stages ? stages->exit(k, x) : x; };
  TS_CHECK(stage_bounds_.empty(),
           "Decoder: this rank holds only pipeline stages of the model: run forward_stage()");
  // Sequence parallelism: from the embedding to the head each rank keeps only its rows.
  const std::optional<SequenceShard> seq = sequence_for(ids);
  const SequenceShard* rows = seq ? &*seq : nullptr;
  const std::optional<ContextShard> chunks = context_for(ids);
  enter(0);
  Tensor x = exit(0, rows     ? embed_rows(ids, *rows)
                     : chunks ? embed_chunks(ids, *chunks)
                              : embed(ids));
  const int L = int(h.size());
  BlockContext ctx;
  ctx.sequence = seq;
  ctx.context = chunks;
  for (int l = 0; l < L; ++l) {
    enter(1 + l);
    // With recompute = blocks the block's forward runs again inside the backward, after the
    // boundary marker of exit(1 + l) re-gathered its parameters and before the one of exit(l)
    // releases them: they are present for the recompute.
    x = exit(1 + l, forward_block(size_t(l), x, ctx));
  }
  enter(L + 1);
  return exit(L + 1, head(x, rows));
}

Tensor Decoder::loss(const Tensor& ids, const Tensor& targets, StageHooks* stages) const {
  TS_CHECK(targets.defined() && targets.dtype() == DType::i32 && targets.shape() == ids.shape(),
           "Decoder::loss: targets are {}, expected i32 of the ids' shape {}", targets.desc(),
           ids.shape().str());
  // Under bf16 autocast the head's backward GEMMs take the logits' gradient in bf16: the loss
  // writes it so (the same rounding, done once, half the bytes of [B*T, vocab]).
  return loss_from_logits(local_logits(ids, stages), targets);
}

Tensor Decoder::loss_from_logits(const Tensor& logits, const Tensor& targets) const {
  const DType grad = autocast_dtype() == DType::bf16 ? DType::bf16 : DType::f32;
  if (!tp_) return ops::cross_entropy(logits, targets, -1, grad);
  TensorParallelGroup* group = tp_;
  return ops::sharded_cross_entropy(
      logits, targets, vocab_part_.begin, cfg_.vocab_size, -1, grad, [group](const Tensor& stats) {
        Tensor all = Tensor::empty(Shape{int64_t(group->size()), stats.dim(0), stats.dim(1)},
                                   DType::f32, stats.device());
        group->all_gather(stats, all, group->equal_counts(stats.numel()));
        return all;
      });
}

std::optional<ContextShard> Decoder::context_for(const Tensor& ids) const {
  if (!cp_) return std::nullopt;
  TS_CHECK(ids.ndim() == 2 && ids.dim(0) % 2 == 0,
           "context parallelism: ids {}, expected this rank's two chunks of each sequence "
           "[2B, Tc]",
           ids.desc());
  return ContextShard{cp_, ids.dim(0) / 2, ids.dim(1)};
}

Tensor Decoder::embed_chunks(const Tensor& ids, const ContextShard& s) const {
  TS_CHECK(s.seq_len() <= cfg_.context,
           "context parallelism: a sequence of {} tokens ({} chunks of {}) is longer than the "
           "context {}",
           s.seq_len(), 2 * s.group->size(), s.chunk, cfg_.context);
  Tensor x =
      tp_ ? tp_reduce(ops::embedding(wte.weight, ids, vocab_part_.begin), *tp_) : wte.forward(ids);
  if (wpe) {
    Tensor parts[2];
    for (int slot = 0; slot < 2; ++slot) {
      std::vector<int32_t> positions;
      for (int64_t t = 0; t < s.chunk; ++t)
        positions.push_back(int32_t(s.first_position(slot) + t));
      const Tensor pos =
          wpe->forward(Tensor::from_ints(positions, Shape{s.chunk}).to(ids.device()));
      parts[slot] = ops::add(ops::rows(x, slot * s.batch, (slot + 1) * s.batch), pos);
    }
    x = ops::concat_rows(parts[0], parts[1]);
  }
  return drop.forward(x);
}

std::optional<SequenceShard> Decoder::sequence_for(const Tensor& ids) const {
  if (!sequence_parallel_) return std::nullopt;
  return sequence_shard(*tp_, ids.dim(0), ids.dim(1));
}

bool Decoder::holds_stage(int s) const {
  return std::find(kept_stages_.begin(), kept_stages_.end(), s) != kept_stages_.end();
}

void Decoder::keep_stages(const std::vector<int>& stages, const std::vector<int>& bounds) {
  const int S = int(bounds.size()) - 1, L = int(h.size());
  TS_CHECK(stage_bounds_.empty(), "Decoder::keep_stages: already split into {} stages",
           num_stages());
  TS_CHECK(S >= 1 && bounds.front() == 0 && bounds.back() == L &&
               std::is_sorted(bounds.begin(), bounds.end()),
           "Decoder::keep_stages: stage bounds must rise from 0 to n_layer = {}", L);
  for (int s = 0; s < S; ++s)
    TS_CHECK(bounds[size_t(s)] < bounds[size_t(s) + 1],
             "pipeline parallelism: stage {} of {} would have no block (n_layer = {})", s, S, L);
  stage_bounds_ = bounds, kept_stages_ = stages;
  for (const auto& [name, p] : named_parameters()) whole_order_.push_back(name);
  std::vector<bool> keep_block(size_t(L), false);
  for (int s : stages) {
    TS_CHECK(s >= 0 && s < S, "Decoder::keep_stages: stage {} of {}", s, S);
    for (int b = bounds[size_t(s)]; b < bounds[size_t(s) + 1]; ++b) keep_block[size_t(b)] = true;
  }
  const bool first = holds_stage(0), last = holds_stage(S - 1);
  // Dropped parameters free their storage; their modules stay as empty shells.
  for (int b = 0; b < L; ++b)
    if (!keep_block[size_t(b)]) {
      unregister("h." + std::to_string(b));
      h[size_t(b)].reset();
    }
  if (!first && !(last && !lm_head)) {
    unregister("wte");
    wte.weight = Tensor();
  }
  if (!first && wpe) {
    unregister("wpe");
    wpe.reset();
  }
  if (!last) {
    unregister("ln_f");
    ln_f.weight = ln_f.bias = Tensor();
    if (lm_head) {
      unregister("lm_head");
      lm_head.reset();
    }
  }
}

Shape Decoder::stage_output_shape(int64_t batch, int64_t seq_len) const {
  if (!sequence_parallel_) return Shape{batch, seq_len, cfg_.n_embd};
  return Shape{even_part(batch * seq_len, tp_->rank(), tp_->size()).size(), cfg_.n_embd};
}

const Tensor* Decoder::tied_embedding() const {
  const bool tied =
      num_stages() > 1 && !lm_head && (holds_stage(0) || holds_stage(num_stages() - 1));
  return tied ? &wte.weight : nullptr;
}

const Tensor* Decoder::tied_copy() const {
  const bool copy =
      num_stages() > 0 && !lm_head && !holds_stage(0) && holds_stage(num_stages() - 1);
  return copy ? &wte.weight : nullptr;
}

Tensor Decoder::forward_stage(int s, const Tensor& ids, const Tensor& targets,
                              const Tensor& x0) const {
  TS_CHECK(holds_stage(s), "Decoder::forward_stage: stage {} is not on this rank", s);
  const std::optional<SequenceShard> seq = sequence_for(ids);
  const SequenceShard* rows = seq ? &*seq : nullptr;
  const std::optional<ContextShard> chunks = context_for(ids);
  Tensor x = x0;
  if (s == 0) x = rows ? embed_rows(ids, *rows) : chunks ? embed_chunks(ids, *chunks) : embed(ids);
  BlockContext ctx;
  ctx.sequence = seq;
  ctx.context = chunks;
  for (int b = stage_bounds_[size_t(s)]; b < stage_bounds_[size_t(s) + 1]; ++b)
    x = forward_block(size_t(b), x, ctx);
  if (s + 1 < num_stages()) return x;
  return loss_from_logits(head(x, rows), targets);
}

namespace {

// Keeps `blocks` of p along dim (a parameter stays a named leaf that requires grad).
void keep_blocks(Tensor& p, int dim, const std::vector<IndexRange>& blocks) {
  Tensor local = take_blocks(p, dim, blocks);
  local.set_requires_grad(true);
  local.set_name(p.name());
  p = local;
}

}  // namespace

void Decoder::shard(TensorParallelGroup& group, bool sequence_parallel) {
  const int R = group.size(), r = group.rank();
  TS_CHECK(!tp_, "Decoder::shard: the model is already split over {} ranks", tp_ ? tp_->size() : 0);
  TS_CHECK(cfg_.n_head % R == 0 && cfg_.n_kv_head % R == 0,
           "tensor parallelism over {} ranks needs n_head ({}) and n_kv_head ({}) to be "
           "multiples of {}: each rank takes whole heads",
           R, cfg_.n_head, cfg_.n_kv_head, R);
  for (const Tensor& p : parameters())
    TS_CHECK(p.device().is_cpu() || p.device().is_meta(),
             "Decoder::shard: parameter '{}' is on {}: shard before to()", p.name(),
             p.device().str());
  const int64_t hs = cfg_.head_size(), H = cfg_.n_head, K = cfg_.n_kv_head;
  const int64_t F = cfg_.mlp_hidden;
  const int64_t q_rows = H / R * hs, kv_rows = K / R * hs;
  auto cut = [this](Tensor& p, int dim, std::vector<IndexRange> blocks) {
    TensorShard s{p.shape(), dim, blocks};
    keep_blocks(p, dim, blocks);
    shards_.emplace_back(p.impl_ptr().get(), std::move(s));
  };
  auto cut_linear = [&](Linear& l, int dim, const std::vector<IndexRange>& blocks) {
    cut(l.weight, dim, blocks);
    if (dim == 0 && l.bias.defined()) cut(l.bias, 0, blocks);  // row-parallel biases stay whole
  };
  vocab_part_ = even_part(cfg_.vocab_size, r, R);
  cut(wte.weight, 0, {vocab_part_});
  if (lm_head) cut(lm_head->weight, 0, {vocab_part_});
  const IndexRange f = even_part(F, r, R);
  for (auto& block : h) {
    CausalSelfAttention& a = block->attn;
    // c_attn's rows are q heads | k heads | v heads: this rank's heads of each.
    cut_linear(a.c_attn, 0,
               {{r * q_rows, (r + 1) * q_rows},
                {H * hs + r * kv_rows, H * hs + (r + 1) * kv_rows},
                {(H + K) * hs + r * kv_rows, (H + K) * hs + (r + 1) * kv_rows}});
    cut_linear(a.c_proj, 1, {{r * q_rows, (r + 1) * q_rows}});
    a.n_head = int(H / R), a.n_kv_head = int(K / R), a.tp = &group;
    MLP& m = block->mlp;
    // SwiGLU's c_fc rows are gate | up: this rank's hidden units of each.
    if (m.kind == MlpKind::swiglu)
      cut_linear(m.c_fc, 0, {f, {F + f.begin, F + f.end}});
    else
      cut_linear(m.c_fc, 0, {f});
    cut_linear(m.c_proj, 1, {f});
    m.tp = &group;
    // Sequence parallelism: the norms see only this rank's rows; their gradients are summed.
    if (sequence_parallel) block->ln_1.sum_grads = block->ln_2.sum_grads = &group;
  }
  if (sequence_parallel) ln_f.sum_grads = &group;
  sequence_parallel_ = sequence_parallel;
  tp_ = &group;
}

std::vector<TensorShard> Decoder::tensor_shards() const {
  std::vector<TensorShard> out;
  for (const Tensor& p : parameters()) {
    TensorShard s{p.shape(), -1, {}};
    for (const auto& [impl, shard] : shards_)
      if (impl == p.impl_ptr().get()) s = shard;
    out.push_back(s);
  }
  return out;
}

ParameterUnits Decoder::parameter_units() const {
  ParameterUnits pu;
  pu.units.push_back(wte.parameters());
  if (wpe) pu.units[0].push_back(wpe->weight);
  for (const auto& block : h) pu.units.push_back(block->parameters());
  std::vector<Tensor> head_params = ln_f.parameters();
  if (lm_head) head_params.push_back(lm_head->weight);
  pu.units.push_back(head_params);
  const int L = int(h.size());
  pu.stages.push_back({0});
  for (int l = 0; l < L; ++l) pu.stages.push_back({1 + l});
  pu.stages.push_back({L + 1});
  if (!lm_head) pu.stages.back().push_back(0);
  return pu;
}

}  // namespace tessera::nn
