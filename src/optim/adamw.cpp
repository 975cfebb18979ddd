#include "optim/adamw.h"

#include <cmath>

#include "kernels/cpu/elementwise.h"

namespace tessera {

AdamW::AdamW(FlatParameters& params, AdamWOptions opt)
    : Optimizer(params, opt.decay_filter), opt_(std::move(opt)) {
  TS_CHECK(opt_.beta1 >= 0 && opt_.beta1 < 1 && opt_.beta2 >= 0 && opt_.beta2 < 1,
           "adamw: betas ({}, {}) must lie in [0, 1)", opt_.beta1, opt_.beta2);
  TS_CHECK(opt_.eps > 0, "adamw: eps {} must be > 0", opt_.eps);
  TS_CHECK(opt_.weight_decay >= 0, "adamw: weight_decay {} must be >= 0", opt_.weight_decay);
  exp_avg_ = add_state_buffer("exp_avg");
  exp_avg_sq_ = add_state_buffer("exp_avg_sq");
}

void AdamW::step(float lr) {
  begin_step(lr);
  const float b1 = opt_.beta1, b2 = opt_.beta2, eps = opt_.eps;
  // Bias corrections in f64: b2^t for b2 = 0.999 loses digits in f32 as t grows.
  const double bc1 = 1.0 - std::pow(double(b1), double(step_));
  const double bc2 = 1.0 - std::pow(double(b2), double(step_));
  const float step_size = float(double(lr) / bc1);
  const float inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float decayed = 1.f - lr * opt_.weight_decay;

  float* p = params_.value_data();
  const float* g = params_.grad_data();
  float* m = exp_avg_;
  float* v = exp_avg_sq_;
  const auto& runs = decay_runs();
  // One parallel region; each thread takes its static share of every run and moves on without
  // waiting (runs are disjoint, so no barrier is needed between them).
#pragma omp parallel if (params_.numel() > cpu::kParallelGrain)
  for (const DecayRun& r : runs) {
    const float keep = r.decay ? decayed : 1.f;
#pragma omp for simd schedule(static) nowait
    for (int64_t i = r.begin; i < r.end; ++i) {
      const float gi = g[i];
      const float mi = b1 * m[i] + (1.f - b1) * gi;
      const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * keep - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
    }
  }
}

}  // namespace tessera
