// SGD with optional momentum, Nesterov momentum and (L2, added to the gradient) weight decay:
//   g <- g + wd * p                 (only parameters with decay on)
//   b <- mu * b + g                 (momentum buffer, starts at zero)
//   p <- p - lr * (nesterov ? g + mu * b : b)      (p - lr * g when mu == 0)
// On the CPU, update_rules.h's sgd_update; on CUDA parameters, one cuda::sgd_step launch over
// the flat buffer (the same formula; the momentum buffer lives on the device).
#pragma once
#include "optim/optimizer.h"

namespace tessera {

struct SGDOptions {
  float momentum = 0.f;
  bool nesterov = false;
  float weight_decay = 0.f;
  DecayFilter decay_filter;  // which parameters decay; null: decay_if_matrix
};

class SGD final : public Optimizer {
 public:
  explicit SGD(FlatParameters& params, SGDOptions opt = {});
  const char* name() const override { return "sgd"; }
  using Optimizer::step;
  void step(float lr, const StepGate* gate) override;
  const SGDOptions& options() const { return opt_; }

 private:
  SGDOptions opt_;
  float* momentum_buf_ = nullptr;  // only with momentum > 0
};

}  // namespace tessera
