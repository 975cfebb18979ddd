#include "nn/classifiers.h"

#include <cmath>

#include "ops/ops.h"

namespace tessera::nn {

namespace {
float kaiming_std(int64_t fan_in, bool relu_after) {
  return std::sqrt((relu_after ? 2.f : 1.f) / float(fan_in));
}
}  // namespace

MLPClassifier::MLPClassifier(const MLPClassifierConfig& cfg, Generator& g) : cfg_(cfg) {
  TS_CHECK(cfg.in_features > 0 && cfg.hidden > 0 && cfg.n_hidden_layers >= 0 && cfg.classes > 0,
           "MLPClassifier: invalid config in_features {} hidden {} n_hidden_layers {} classes {}",
           cfg.in_features, cfg.hidden, cfg.n_hidden_layers, cfg.classes);
  int64_t in = cfg.in_features;
  for (int i = 0; i < cfg.n_hidden_layers; ++i) {
    layers.push_back(std::make_unique<Linear>(in, cfg.hidden, true, g, kaiming_std(in, true)));
    register_module("layers." + std::to_string(i), *layers.back());
    in = cfg.hidden;
  }
  head = std::make_unique<Linear>(in, cfg.classes, true, g, kaiming_std(in, false));
  register_module("head", *head);
}

Tensor MLPClassifier::forward(const Tensor& x) const {
  TS_CHECK(x.defined() && x.ndim() >= 1 && x.dim(0) > 0 && x.numel() == x.dim(0) * cfg_.in_features,
           "MLPClassifier: input {} does not hold {} features per sample", x.desc(),
           cfg_.in_features);
  Tensor h = ops::reshape(x, Shape{x.dim(0), cfg_.in_features});
  for (const auto& layer : layers) h = ops::relu(layer->forward(h));
  return head->forward(h);
}

namespace {
const CNNClassifierConfig& checked(const CNNClassifierConfig& c) {
  TS_CHECK(c.in_channels > 0 && c.channels > 0 && c.classes > 0 && c.height > 0 && c.width > 0 &&
               c.height % 4 == 0 && c.width % 4 == 0,
           "CNNClassifier: invalid config in_channels {} {}x{} (must be multiples of 4) channels "
           "{} classes {}",
           c.in_channels, c.height, c.width, c.channels, c.classes);
  return c;
}
}  // namespace

CNNClassifier::CNNClassifier(const CNNClassifierConfig& cfg, Generator& g)
    : cfg_(checked(cfg)),
      conv1(cfg.in_channels, cfg.channels, 3, 1, 1, g, kaiming_std(cfg.in_channels * 9, true)),
      conv2(cfg.channels, 2 * cfg.channels, 3, 1, 1, g, kaiming_std(cfg.channels * 9, true)),
      head(2 * cfg.channels * (cfg.height / 4) * (cfg.width / 4), cfg.classes, true, g,
           kaiming_std(2 * cfg.channels * (cfg.height / 4) * (cfg.width / 4), false)) {
  register_module("conv1", conv1);
  register_module("conv2", conv2);
  register_module("head", head);
}

Tensor CNNClassifier::forward(const Tensor& x) const {
  TS_CHECK(x.defined() && x.ndim() == 4 && x.dim(1) == cfg_.in_channels &&
               x.dim(2) == cfg_.height && x.dim(3) == cfg_.width,
           "CNNClassifier: input {} expected [N, {}, {}, {}]", x.desc(), cfg_.in_channels,
           cfg_.height, cfg_.width);
  Tensor h = ops::max_pool2d(ops::relu(conv1.forward(x)), 2, 2);
  h = ops::max_pool2d(ops::relu(conv2.forward(h)), 2, 2);
  return head.forward(ops::reshape(h, Shape{h.dim(0), h.numel() / h.dim(0)}));
}

}  // namespace tessera::nn
