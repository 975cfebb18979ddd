// The language-model task: a decoder (any model kind) on byte-level text or llm.c token shards.
#include <cmath>
#include <optional>

#include "autograd/grad_mode.h"
#include "core/meta_device.h"
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
    } else if (cfg.data.kind == "random") {
      // No validation split: the loss on random ids says nothing, and a plan is of training.
      // Sixteen batches' worth, or two for a plan (train.device = "meta"), which runs two
      // steps and reads no value: for a long context and a large batch, generating sixteen was
      // a fifth of a layout search's time.
      const int64_t batches = cfg.train.device == "meta" ? 2 : 16;
      train_ = data::random_tokens(cfg.model.vocab_size, B * (T + 1) * batches,
                                   uint64_t(cfg.train.seed));
    } else {
      // Shard files, folders or globs; an id outside the vocabulary is refused naming its file.
      train_ = data::read_token_shards(cfg.data.path, cfg.model.vocab_size);
      if (!cfg.data.val_path.empty())
        val_ = data::read_token_shards(cfg.data.val_path, cfg.model.vocab_size);
    }
    tokenizer_ = load_data_tokenizer(cfg);
    {
      // A plan (train.device = "meta") builds the model without memory: it may be far larger
      // than this machine (core/meta_device.h).
      std::optional<meta::BuildOnMeta> on_meta;
      if (cfg.train.device == "meta") on_meta.emplace();
      model_ = make_decoder(cfg, init_gen_);
    }
    load_init_weights(*model_, cfg);
    if (place.tensor_parallel) model_->shard(*place.tensor_parallel, place.sequence_parallel);
    if (place.pipeline) keep_pipeline_stages(*place.pipeline, place.virtual_stages);
    if (place.context_parallel) {
      cp_ = place.context_parallel;
      model_->set_context_parallel(*cp_);
    }
    batches_ = std::make_unique<data::PrefetchingBatcher<data::TokenBatcher>>(data::TokenBatcher(
        train_, B, T, uint64_t(cfg.train.seed) + 1, place.rank, place.world_size));
    sample_gen_ = Generator(uint64_t(cfg.train.seed) + 2);
  }

  nn::Module& model() override { return *model_; }
  void set_device(Device device) override { device_ = device; }
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
    if (cp_) return model_->loss(chunks(batch_.x, a, b), chunks(batch_.y, a, b), gather_);
    Tensor x = x_.slice_rows(a, b), y = y_.slice_rows(a, b);
    return model_->loss(x, y, gather_);
  }

  int pipeline_stages() const override { return model_->num_stages(); }
  Tensor stage_forward(int stage, int64_t i, int64_t n, const Tensor& x) override {
    const int64_t rows = x_.dim(0), a = rows * i / n, b = rows * (i + 1) / n;
    if (cp_) return model_->forward_stage(stage, chunks(batch_.x, a, b), chunks(batch_.y, a, b), x);
    return model_->forward_stage(stage, x_.slice_rows(a, b), y_.slice_rows(a, b), x);
  }
  Shape stage_output_shape(int64_t n) const override {
    const int64_t rows = x_.dim(0) / n, T = cfg_.train.seq_len;
    if (cp_) return model_->stage_output_shape(2 * rows, T / (2 * cp_->size()));
    return model_->stage_output_shape(rows, T);
  }
  const Tensor* tied_embedding() const override { return model_->tied_embedding(); }
  int64_t whole_parameter_count() const override {
    return nn::decoder_num_parameters(model_->decoder_config());
  }
  std::vector<std::string> whole_parameter_order() const override {
    return model_->whole_parameter_order();
  }
  const Tensor* tied_stage_copy() const override { return model_->tied_copy(); }

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

  nlohmann::json evaluate(const EvalShare& share) override {
    if (!val_.defined() || val_.numel() < cfg_.train.seq_len + 1) return {};
    NoGradGuard no_grad;
    model_->eval();
    const int64_t B = cfg_.train.batch_size;
    data::SequentialTokenBatches eval(val_, B, cfg_.train.seq_len, cfg_.train.eval_batches);
    const std::vector<std::vector<double>> losses =
        evaluate_shared(share, eval.num_batches(), 1,
                        [&](int64_t i) { return std::vector<double>{eval_loss(eval.batch(i))}; });
    model_->train();
    if (losses.empty()) return {};
    double total = 0;
    for (const std::vector<double>& l : losses) total += l[0];  // in batch order
    return {{"val_loss", total / double(losses.size())}};
  }

  std::string sample(int64_t tokens) override {
    if (!tokenizer_ && cfg_.model.vocab_size != data::kByteVocabSize) return "";
    if (pipeline_) return "";  // generation runs on a whole model
    model_->eval();
    SampleOptions opt;
    opt.tokens = tokens, opt.temperature = 0.8f, opt.top_k = 40;
    std::string s = generate_text(*model_, "And God said", opt, sample_gen_, tokenizer_.get());
    model_->train();
    return "And God said" + s;
  }

 private:
  // Context parallelism: rows [a, b) of a host batch [rows, T] as this rank's two chunks of
  // each sequence, [2 (b - a), Tc] on the training device (nn::ContextShard's layout).
  Tensor chunks(const Tensor& host, int64_t a, int64_t b) const {
    const int64_t n = b - a, T = host.dim(1), Tc = T / (2 * cp_->size());
    const nn::ContextShard s{cp_, n, Tc};
    const Tensor rows = host.contiguous();
    const int32_t* src = rows.data<int32_t>();
    std::vector<int32_t> out(size_t(2 * n * Tc));
    for (int slot = 0; slot < 2; ++slot)
      for (int64_t r = 0; r < n; ++r)
        std::copy_n(src + (a + r) * T + s.first_position(slot), Tc,
                    out.begin() + (slot * n + r) * Tc);
    return to_training_device(Tensor::from_ints(out, Shape{2 * n, Tc}), device_);
  }

  // One evaluation batch's loss: through the pipeline's stages when split, over this rank's
  // chunks (then averaged over the context-parallel ranks, which hold equal token counts).
  double eval_loss(const data::TokenBatch& b) {
    const int64_t rows = b.x.dim(0);
    const Tensor x = cp_ ? chunks(b.x, 0, rows) : to_training_device(b.x, device_);
    const Tensor y = cp_ ? chunks(b.y, 0, rows) : to_training_device(b.y, device_);
    const double loss =
        pipeline_ ? pipelined_loss(x, y) : double(model_->loss(x, y, gather_).item());
    if (!cp_) return loss;
    Tensor sum = Tensor::full(Shape{1}, loss, DType::f32, device_);
    cp_->all_reduce_sum(sum);
    return double(sum.item()) / double(cp_->size());
  }

  // Pipeline parallelism: this rank keeps stages s with s % p == its rank of the S = p x v
  // stages of consecutive blocks (as even as the layers allow).
  void keep_pipeline_stages(dist::Communicator& pp, int virtual_stages) {
    pipeline_ = &pp;
    const int p = pp.world_size(), S = p * virtual_stages, L = int(cfg_.model.n_layer);
    TS_CHECK(L >= S,
             "config: parallel.pp = {} x parallel.pp_virtual_stages = {} = {} pipeline stages, "
             "but model.n_layer = {}: every stage needs a block",
             p, virtual_stages, S, L);
    std::vector<int> bounds, mine;
    for (int s = 0; s <= S; ++s) bounds.push_back(L * s / S);
    for (int s = pp.rank(); s < S; s += p) mine.push_back(s);
    model_->keep_stages(mine, bounds);
  }

  // Evaluation's loss of one batch through the stages in order: each stage's rank runs it and
  // sends its output to the next stage's; the last stage's loss reaches every rank.
  double pipelined_loss(const Tensor& x, const Tensor& y) {
    const int p = pipeline_->world_size(), S = model_->num_stages(), me = pipeline_->rank();
    Tensor act;
    double loss = 0;
    for (int s = 0; s < S; ++s) {
      const int owner = s % p;
      if (s > 0 && owner == me && (s - 1) % p != me) {
        act = Tensor::empty(model_->stage_output_shape(x.dim(0), x.dim(1)), DType::f32, device_);
        pipeline_->recv(act, (s - 1) % p);
      }
      if (owner != me) continue;
      const Tensor out = model_->forward_stage(s, x, y, act);
      if (s + 1 == S) {
        loss = double(out.item());
      } else if ((s + 1) % p != me) {
        pipeline_->send(out.to(DType::f32).contiguous(), (s + 1) % p);
      } else {
        act = out;
      }
    }
    return pipeline_->all_gather_f64(loss)[size_t((S - 1) % p)];
  }

  Config cfg_;
  dist::Communicator* pipeline_ = nullptr;
  nn::TensorParallelGroup* cp_ = nullptr;
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
