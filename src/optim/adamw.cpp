#include "optim/adamw.h"

#include <cmath>
#include <vector>

#include "core/backend.h"
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

void AdamW::step(float lr, const StepGate* gate) {
  begin_step(lr);
  TS_CHECK(!gate || !params_.device().is_cpu(),
           "adamw: a step gate is device memory; the parameters are on the CPU");
  const AdamWScalars sc =
      AdamWScalars::at(lr, step_, opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay);
  const auto& runs = decay_runs();

  if (!params_.device().is_cpu()) {
    // One launch over the whole flat buffer (on CUDA kernels/cuda/optim.h), the same formula per
    // element. The decay runs are uploaded once per layout (device_decay_runs): a per-step copy
    // from pageable memory would make the host wait for the GPU to drain every step.
    const DeviceBackend& b = backend_for(params_.device(), "adamw");
    AdamWArgs a;
    a.p = params_.value_ptr();
    a.g = params_.grad_ptr();
    a.m = exp_avg_;
    a.v = exp_avg_sq_;
    a.n = params_.numel();
    a.runs = static_cast<const DeviceDecayRun*>(device_decay_runs().raw_data());
    a.nruns = int32_t(runs.size());
    a.beta1 = sc.beta1, a.beta2 = sc.beta2, a.eps = sc.eps;
    a.step_size = sc.step_size, a.inv_sqrt_bc2 = sc.inv_sqrt_bc2, a.decayed = sc.decayed;
    if (gate) {
      a.gate = gate, a.lr = lr;
      a.bias_corrections = bias_.covering(step_, opt_.beta1, opt_.beta2, params_.device());
    }
    b.adamw_step(a);
    return;
  }

  adamw_update(sc, runs, params_.value_data(), params_.grad_data(), exp_avg_, exp_avg_sq_,
               params_.numel() > cpu::kParallelGrain);
}

}  // namespace tessera
