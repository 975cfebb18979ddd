// The image-classification task: an MLP or a CNN on Fashion-MNIST.
#include "autograd/grad_mode.h"
#include "data/loader.h"
#include "nn/classifiers.h"
#include "ops/ops.h"
#include "train/device.h"
#include "train/init_weights.h"
#include "train/model_kinds.h"
#include "train/task_factory.h"

namespace tessera::train {
namespace {

std::unique_ptr<nn::Module> make_classifier(const Config& cfg, Generator& g) {
  if (cfg.model.kind == "mlp") {
    nn::MLPClassifierConfig m;
    m.hidden = cfg.model.mlp_hidden;
    m.n_hidden_layers = int(cfg.model.mlp_layers);
    return std::make_unique<nn::MLPClassifier>(m, g);
  }
  nn::CNNClassifierConfig c;
  c.channels = cfg.model.cnn_channels;
  return std::make_unique<nn::CNNClassifier>(c, g);
}

class ClassifierTask final : public Task {
 public:
  ClassifierTask(const Config& cfg, TaskPlacement place)
      : cfg_(cfg), init_gen_(uint64_t(cfg.train.seed)) {
    TS_CHECK(cfg.data.kind == "fashion-mnist",
             "config: model.kind = \"{}\" trains on images: expected data.kind = "
             "\"fashion-mnist\", got \"{}\"",
             cfg.model.kind, cfg.data.kind);
    data::ImageDataset train = data::load_fashion_mnist(cfg.data.path, "train");
    test_ = data::load_fashion_mnist(cfg.data.path, "test");
    model_ = make_classifier(cfg, init_gen_);
    load_init_weights(*model_, cfg);
    batches_ = std::make_unique<data::PrefetchingBatcher<data::ImageBatcher>>(data::ImageBatcher(
        train, cfg.train.batch_size, uint64_t(cfg.train.seed) + 1, place.rank, place.world_size));
  }

  nn::Module& model() override { return *model_; }
  void set_device(Device device) override { device_ = device; }
  const std::vector<int64_t>& sample_ids() const override { return batch_.sample_ids; }
  void next_batch() override {
    batch_ = batches_->next();
    images_ = to_training_device(batch_.images, device_);
    labels_ = to_training_device(batch_.labels, device_);
  }

  data::SamplerState data_state() const override { return batches_->state(); }
  void set_data_state(const data::SamplerState& state) override { batches_->set_state(state); }

  Tensor micro_loss(int64_t i, int64_t n) override {
    const int64_t rows = labels_.dim(0), a = rows * i / n, b = rows * (i + 1) / n;
    Tensor logits = forward(images_.slice_rows(a, b));
    return ops::cross_entropy(logits, labels_.slice_rows(a, b));
  }

  int64_t items_per_step() const override { return cfg_.train.batch_size; }
  const char* rate_key() const override { return "samples_per_s"; }
  const char* rate_unit() const override { return "samples/s"; }

  nlohmann::json evaluate(const EvalShare& share) override {
    NoGradGuard no_grad;
    model_->eval();
    data::SequentialImageBatches eval(test_, 1000);
    // Per batch: its summed loss, correct predictions and images.
    const std::vector<std::vector<double>> per_batch =
        evaluate_shared(share, eval.num_batches(), 3, [&](int64_t i) {
          const data::ImageBatch b = eval.batch(i);
          Tensor logits = forward(to_training_device(b.images, device_));
          const int64_t n = b.labels.dim(0), C = logits.dim(-1);
          const double loss =
              double(ops::cross_entropy(logits, to_training_device(b.labels, device_)).item()) *
              double(n);
          if (!logits.device().is_cpu()) logits = logits.to(Device::cpu());
          const float* l = logits.data<float>();
          const int32_t* y = b.labels.data<int32_t>();
          int64_t correct = 0;
          for (int64_t r = 0; r < n; ++r) {
            int64_t best = 0;
            for (int64_t c = 1; c < C; ++c) best = l[r * C + c] > l[r * C + best] ? c : best;
            correct += best == y[r];
          }
          return std::vector<double>{loss, double(correct), double(n)};
        });
    model_->train();
    double loss = 0, correct = 0, total = 0;
    for (const std::vector<double>& b : per_batch) loss += b[0], correct += b[1], total += b[2];
    return {{"test_accuracy", correct / total}, {"test_loss", loss / total}};
  }

 private:
  Tensor forward(const Tensor& images) const {
    if (auto* m = dynamic_cast<nn::MLPClassifier*>(model_.get())) return m->forward(images);
    return static_cast<nn::CNNClassifier*>(model_.get())->forward(images);
  }

  Config cfg_;
  Generator init_gen_;
  data::ImageDataset test_;
  std::unique_ptr<nn::Module> model_;
  std::unique_ptr<data::PrefetchingBatcher<data::ImageBatcher>> batches_;
  data::ImageBatch batch_;
  Device device_;
  Tensor images_, labels_;  // batch_ on device_
};

}  // namespace

std::unique_ptr<Task> make_classifier_task(const Config& cfg, TaskPlacement place) {
  return std::make_unique<ClassifierTask>(cfg, place);
}

std::unique_ptr<Task> make_task(const Config& cfg, TaskPlacement place) {
  if (model_kind(cfg.model.kind).language_model) return make_lm_task(cfg, place);
  return make_classifier_task(cfg, place);
}

}  // namespace tessera::train
