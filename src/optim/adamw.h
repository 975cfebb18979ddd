// AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient,
//   p <- p * (1 - lr * wd)                       (only parameters with decay on)
//   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// as one fused OpenMP pass over the flat buffers.
#pragma once
#include "optim/bias_corrections.h"
#include "optim/optimizer.h"

namespace tessera {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
  DecayFilter decay_filter;  // which parameters decay; null: decay_if_matrix
};

class AdamW final : public Optimizer {
 public:
  explicit AdamW(FlatParameters& params, AdamWOptions opt = {});
  const char* name() const override { return "adamw"; }
  using Optimizer::step;
  void step(float lr, const StepGate* gate) override;
  const AdamWOptions& options() const { return opt_; }

 private:
  AdamWOptions opt_;
  float* exp_avg_;              // m
  float* exp_avg_sq_;           // v
  DeviceBiasCorrections bias_;  // for gated steps
};

}  // namespace tessera
