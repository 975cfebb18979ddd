// The language-model task: a decoder (any model kind) on byte-level text or llm.c token shards.
#include <cmath>

#include "autograd/grad_mode.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/text.h"
#include "ops/ops.h"
#include "tokenizer/tokenizer.h"
#include "train/device.h"
#include "train/generate.h"
#include "train/init_weights.h"
#include "train/model_kinds.h"
#include "train/task_factory.h"

namespace tessera::train {
namespace {

class LMTask final : public Task {
 public:
  LMTask(const Config& cfg, TaskPlacement place) : cfg_(cfg), init_gen_(uint64_t(cfg.train.seed)) {
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
    tokenizer_ = load_data_tokenizer(cfg);
    model_ = make_decoder(cfg, init_gen_);
    load_init_weights(*model_, cfg);
    if (place.tensor_parallel) model_->shard(*place.tensor_parallel, place.sequence_parallel);
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
    return model_->loss(x, y, gather_);
  }

  std::vector<nn::TensorShard> parameter_shards() const override {
    return model_->tensor_parallel() ? model_->tensor_shards() : std::vector<nn::TensorShard>{};
  }
  dist::ParameterUnits parameter_units() override { return model_->parameter_units(); }
  void set_parameter_gather(dist::ParameterGather* gather) override { gather_ = gather; }

  int64_t items_per_step() const override { return cfg_.train.batch_size * cfg_.train.seq_len; }
  const char* rate_key() const override { return "tokens_per_s"; }
  const char* rate_unit() const override { return "tok/s"; }
  double flops_per_step() const override {
    return nn::decoder_flops_per_token(model_->decoder_config(), cfg_.train.seq_len) *
           double(items_per_step());
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
    if (!tokenizer_ && cfg_.model.vocab_size != data::kByteVocabSize) return "";
    model_->eval();
    SampleOptions opt;
    opt.tokens = tokens, opt.temperature = 0.8f, opt.top_k = 40;
    std::string s = generate_text(*model_, "And God said", opt, sample_gen_, tokenizer_.get());
    model_->train();
    return "And God said" + s;
  }

 private:
  Config cfg_;
  Generator init_gen_;
  Tensor train_, val_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;  // data.tokenizer, for text samples
  std::unique_ptr<nn::Decoder> model_;
  std::unique_ptr<data::PrefetchingBatcher<data::TokenBatcher>> batches_;
  data::TokenBatch batch_;
  Device device_;
  Tensor x_, y_;  // batch_ on device_
  Generator sample_gen_;
  dist::ParameterGather* gather_ = nullptr;
};

}  // namespace

std::unique_ptr<Task> make_lm_task(const Config& cfg, TaskPlacement place) {
  return std::make_unique<LMTask>(cfg, place);
}

}  // namespace tessera::train
