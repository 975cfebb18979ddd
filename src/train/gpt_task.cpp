// The language-model task: a GPT on byte-level text or llm.c token shards.
#include <cmath>

#include "autograd/grad_mode.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/text.h"
#include "nn/gpt.h"
#include "ops/ops.h"
#include "train/device.h"
#include "train/generate.h"
#include "train/init_weights.h"
#include "train/task_factory.h"

namespace tessera::train {
namespace {

nn::GPTConfig gpt_config(const Config& cfg) {
  nn::GPTConfig g;
  g.n_layer = int(cfg.model.n_layer);
  g.n_head = int(cfg.model.n_head);
  g.n_embd = cfg.model.n_embd;
  g.context = cfg.model.context;
  g.vocab_size = cfg.model.vocab_size;
  g.dropout = float(cfg.model.dropout);
  g.recompute = nn::recompute_from_name(cfg.model.recompute);
  return g;
}

class GPTTask final : public Task {
 public:
  GPTTask(const Config& cfg, TaskPlacement place) : cfg_(cfg), init_gen_(uint64_t(cfg.train.seed)) {
    const int64_t T = cfg.train.seq_len, B = cfg.train.batch_size;
    if (cfg.data.kind == "text") {
      TS_CHECK(cfg.model.vocab_size >= data::kByteVocabSize,
               "config: model.vocab_size = {} is too small for byte-level text (data.kind = "
               "\"text\"): expected >= 256",
               cfg.model.vocab_size);
      data::TextSplits s = data::load_byte_corpus(cfg.data.path, cfg.data.val_fraction, T + 1);
      train_ = s.train, val_ = s.val;
    } else {
      // Shard files, folders or globs; an id outside the vocabulary is refused naming its file.
      train_ = data::read_token_shards(cfg.data.path, cfg.model.vocab_size);
      if (!cfg.data.val_path.empty())
        val_ = data::read_token_shards(cfg.data.val_path, cfg.model.vocab_size);
    }
    model_ = std::make_unique<nn::GPT>(gpt_config(cfg), init_gen_);
    load_init_weights(*model_, cfg);
    batches_ = std::make_unique<data::PrefetchingBatcher<data::TokenBatcher>>(data::TokenBatcher(
        train_, B, T, uint64_t(cfg.train.seed) + 1, place.rank, place.world_size));
    sample_gen_ = Generator(uint64_t(cfg.train.seed) + 2);
  }

  nn::Module& model() override { return *model_; }
  void to_device(Device device) override {
    device_ = device;
    model_->to(device);
  }
  const std::vector<int64_t>& sample_ids() const override { return batch_.sample_ids; }
  void next_batch() override {
    batch_ = batches_->next();
    x_ = to_training_device(batch_.x, device_);
    y_ = to_training_device(batch_.y, device_);
  }

  data::SamplerState data_state() const override { return batches_->state(); }
  void set_data_state(const data::SamplerState& state) override { batches_->set_state(state); }
  std::vector<std::pair<std::string, Generator*>> generators() override {
    return {{"dropout", &model_->dropout_generator()}, {"sample", &sample_gen_}};
  }

  Tensor micro_loss(int64_t i, int64_t n) override {
    const int64_t rows = x_.dim(0), a = rows * i / n, b = rows * (i + 1) / n;
    Tensor x = x_.slice_rows(a, b), y = y_.slice_rows(a, b);
    if (gather_) return ops::cross_entropy(staged_forward(x), y);
    return model_->loss(x, y);
  }

  // Units: the embeddings (wte, wpe), each block, the final norm. Stages: the embeddings, each
  // block, then the final norm with the tied output head (wte again).
  dist::ParameterUnits parameter_units() override {
    dist::ParameterUnits pu;
    pu.units.push_back({model_->wte.weight, model_->wpe.weight});
    for (const auto& block : model_->h) pu.units.push_back(block->parameters());
    pu.units.push_back(model_->ln_f.parameters());
    const int L = int(model_->h.size());
    pu.stages.push_back({0});
    for (int l = 0; l < L; ++l) pu.stages.push_back({1 + l});
    pu.stages.push_back({L + 1, 0});
    return pu;
  }
  void set_parameter_gather(dist::ParameterGather* gather) override { gather_ = gather; }

  int64_t items_per_step() const override { return cfg_.train.batch_size * cfg_.train.seq_len; }
  const char* rate_key() const override { return "tokens_per_s"; }
  const char* rate_unit() const override { return "tok/s"; }
  double flops_per_step() const override {
    return nn::gpt_flops_per_token(model_->config(), cfg_.train.seq_len) * double(items_per_step());
  }

  nlohmann::json evaluate() override {
    if (!val_.defined() || val_.numel() < cfg_.train.seq_len + 1) return {};
    NoGradGuard no_grad;
    model_->eval();
    const int64_t B = cfg_.train.batch_size;
    data::SequentialTokenBatches eval(val_, B, cfg_.train.seq_len, cfg_.train.eval_batches);
    double total = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < eval.num_batches(); ++i) {
      data::TokenBatch b = eval.batch(i);
      total += double(
          model_->loss(to_training_device(b.x, device_), to_training_device(b.y, device_)).item());
      ++count;
    }
    model_->train();
    if (count == 0) return {};
    return {{"val_loss", total / double(count)}};
  }

  std::string sample(int64_t tokens) override {
    if (cfg_.model.vocab_size != data::kByteVocabSize) return "";
    model_->eval();
    SampleOptions opt;
    opt.tokens = tokens, opt.temperature = 0.8f, opt.top_k = 40;
    std::string s = generate_text(*model_, "And God said", opt, sample_gen_);
    model_->train();
    return "And God said" + s;
  }

 private:
  // GPT::forward (nn/gpt.cpp) stage by stage, with ZeRO-3 gathering each stage's parameters
  // just before it runs. Keep the two in step: the ZeRO-3 equivalence test compares them.
  Tensor staged_forward(const Tensor& ids) {
    const nn::GPT& m = *model_;
    const int64_t T = ids.dim(1);
    TS_CHECK(T >= 1 && T <= cfg_.model.context,
             "GPT::forward: sequence length {} (ids {}) outside [1, context = {}]", T, ids.desc(),
             cfg_.model.context);
    std::vector<int32_t> positions(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) positions[size_t(t)] = int32_t(t);
    // On the ids' device, as in GPT::forward (a CPU tensor here made every ZeRO-3 step on a GPU
    // fail; found by the emulated CUDA device).
    Tensor pos = Tensor::from_ints(positions, Shape{T}).to(ids.device());
    gather_->enter(0);
    Tensor x = m.drop.forward(ops::add(m.wte.forward(ids), m.wpe.forward(pos)));
    x = gather_->exit(0, x);
    const int L = int(m.h.size());
    for (int l = 0; l < L; ++l) {
      gather_->enter(1 + l);
      // With model.recompute = "blocks" the block's forward runs again inside the backward,
      // after the boundary marker of exit(1 + l) re-gathered its parameters and before the
      // one of exit(l) releases them: they are present for the recompute.
      x = gather_->exit(1 + l, m.forward_block(size_t(l), x));
    }
    gather_->enter(L + 1);
    return gather_->exit(L + 1, ops::linear(m.ln_f.forward(x), m.wte.weight));
  }

  Config cfg_;
  Generator init_gen_;
  Tensor train_, val_;
  std::unique_ptr<nn::GPT> model_;
  std::unique_ptr<data::PrefetchingBatcher<data::TokenBatcher>> batches_;
  data::TokenBatch batch_;
  Device device_;
  Tensor x_, y_;  // batch_ on device_
  Generator sample_gen_;
  dist::ParameterGather* gather_ = nullptr;
};

}  // namespace

std::unique_ptr<Task> make_gpt_task(const Config& cfg, TaskPlacement place) {
  return std::make_unique<GPTTask>(cfg, place);
}

}  // namespace tessera::train
