#include "optim/sgd.h"

#include "core/backend.h"
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

void SGD::step(float lr, const StepGate* gate) {
  begin_step(lr);
  TS_CHECK(!gate || !params_.device().is_cpu(),
           "sgd: a step gate is device memory; the parameters are on the CPU");
  if (!params_.device().is_cpu()) {
    // One launch over the whole flat buffer, sgd_update's formula per element; the momentum
    // buffer is a device tensor (add_state_buffer allocates on the parameters' device).
    const DeviceBackend& b = backend_for(params_.device(), "sgd");
    SGDArgs a;
    a.p = params_.value_ptr();
    a.g = params_.grad_ptr();
    a.b = momentum_buf_;
    a.n = params_.numel();
    if (opt_.weight_decay != 0.f) {  // the runs are only read when something decays
      a.runs = static_cast<const DeviceDecayRun*>(device_decay_runs().raw_data());
      a.nruns = int32_t(decay_runs().size());
    }
    a.lr = lr, a.momentum = opt_.momentum, a.weight_decay = opt_.weight_decay;
    a.nesterov = opt_.nesterov;
    a.gate = gate;
    b.sgd_step(a);
    return;
  }
  sgd_update(lr, opt_.momentum, opt_.nesterov, opt_.weight_decay, decay_runs(),
             params_.value_data(), params_.grad_data(), momentum_buf_,
             params_.numel() > cpu::kParallelGrain);
}

}  // namespace tessera
