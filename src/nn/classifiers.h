// Image classifiers for 28x28 single-channel digits (MNIST-style), producing logits [N, 10].
// Initialisation is Kaiming-normal: std sqrt(2 / fan_in) for layers followed by a ReLU, and
// sqrt(1 / fan_in) for the output layer (no ReLU after it); biases zero. Drawn from the caller's
// Generator in parameter order.
#pragma once
#include <memory>
#include <vector>

#include "nn/layers.h"

namespace tessera::nn {

struct MLPClassifierConfig {
  int64_t in_features = 784;  // the image, flattened
  int64_t hidden = 256;
  int n_hidden_layers = 2;  // each Linear -> ReLU
  int64_t classes = 10;
};

// Flatten -> (Linear -> ReLU) x n_hidden_layers -> Linear. Parameters "layers.{i}.weight",
// "layers.{i}.bias", then "head.weight", "head.bias".
class MLPClassifier : public Module {
 public:
  MLPClassifier(const MLPClassifierConfig& cfg, Generator& g);
  // x [N, ...] with in_features elements per sample (e.g. [N, 1, 28, 28]) -> logits [N, classes].
  Tensor forward(const Tensor& x) const;

  std::vector<std::unique_ptr<Linear>> layers;
  std::unique_ptr<Linear> head;

 private:
  MLPClassifierConfig cfg_;
};

struct CNNClassifierConfig {
  int64_t in_channels = 1;
  int64_t height = 28, width = 28;  // each must be divisible by 4 (two 2x2 poolings)
  int64_t channels = 16;            // c: the first conv's outputs; the second has 2c
  int64_t classes = 10;
};

// conv3x3(in -> c, padding 1) -> ReLU -> maxpool 2, conv3x3(c -> 2c, padding 1) -> ReLU ->
// maxpool 2, flatten, Linear(2c * H/4 * W/4 -> classes). Parameters "conv1.*", "conv2.*",
// "head.*".
class CNNClassifier : public Module {
 public:
  CNNClassifier(const CNNClassifierConfig& cfg, Generator& g);
  // x [N, in_channels, height, width] -> logits [N, classes].
  Tensor forward(const Tensor& x) const;

 private:
  CNNClassifierConfig cfg_;  // declared first: the layers are sized from it

 public:
  Conv2d conv1, conv2;
  Linear head;
};

}  // namespace tessera::nn
