#include "optim/sgd.h"

#include "kernels/cpu/elementwise.h"

namespace tessera {

SGD::SGD(FlatParameters& params, SGDOptions opt)
    : Optimizer(params, opt.decay_filter), opt_(std::move(opt)) {
  TS_CHECK(opt_.momentum >= 0 && opt_.momentum < 1, "sgd: momentum {} must lie in [0, 1)",
           opt_.momentum);
  TS_CHECK(!opt_.nesterov || opt_.momentum > 0, "sgd: nesterov needs momentum > 0, got {}",
           opt_.momentum);
  TS_CHECK(opt_.weight_decay >= 0, "sgd: weight_decay {} must be >= 0", opt_.weight_decay);
  if (opt_.momentum > 0) momentum_buf_ = add_state_buffer("momentum");
}

void SGD::step(float lr) {
  begin_step(lr);
  const float mu = opt_.momentum;
  const bool nesterov = opt_.nesterov;
  float* p = params_.value_data();
  const float* g = params_.grad_data();
  float* b = momentum_buf_;
  const auto& runs = decay_runs();
  // One parallel region over all runs, as in AdamW::step.
#pragma omp parallel if (params_.numel() > cpu::kParallelGrain)
  for (const DecayRun& r : runs) {
    const float wd = r.decay ? opt_.weight_decay : 0.f;
    if (b) {
#pragma omp for simd schedule(static) nowait
      for (int64_t i = r.begin; i < r.end; ++i) {
        const float gi = g[i] + wd * p[i];
        const float bi = mu * b[i] + gi;
        b[i] = bi;
        p[i] -= lr * (nesterov ? gi + mu * bi : bi);
      }
    } else {
#pragma omp for simd schedule(static) nowait
      for (int64_t i = r.begin; i < r.end; ++i) p[i] -= lr * (g[i] + wd * p[i]);
    }
  }
}

}  // namespace tessera
