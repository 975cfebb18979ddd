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
  sgd_update(lr, opt_.momentum, opt_.nesterov, opt_.weight_decay, decay_runs(),
             params_.value_data(), params_.grad_data(), momentum_buf_,
             params_.numel() > cpu::kParallelGrain);
}

}  // namespace tessera
