#include "optim/loss_scaler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "core/backend.h"
#include "core/meta_device.h"
#include "kernels/cpu/elementwise.h"
#include "ops/ops.h"

namespace tessera {

DynamicLossScaler::DynamicLossScaler(LossScalerOptions opt) : opt_(opt) {
  TS_CHECK(std::isfinite(opt_.init_scale) && opt_.init_scale > 0,
           "DynamicLossScaler: init_scale {} must be finite and > 0", opt_.init_scale);
  TS_CHECK(opt_.growth_factor > 1, "DynamicLossScaler: growth_factor {} must be > 1",
           opt_.growth_factor);
  TS_CHECK(opt_.backoff_factor > 0 && opt_.backoff_factor < 1,
           "DynamicLossScaler: backoff_factor {} must lie in (0, 1)", opt_.backoff_factor);
  TS_CHECK(opt_.growth_interval >= 1, "DynamicLossScaler: growth_interval {} must be >= 1",
           opt_.growth_interval);
  TS_CHECK(opt_.min_scale > 0 && opt_.min_scale <= opt_.init_scale,
           "DynamicLossScaler: min_scale {} must lie in (0, init_scale = {}]", opt_.min_scale,
           opt_.init_scale);
  scale_ = opt_.enabled ? opt_.init_scale : 1.f;
}

Tensor DynamicLossScaler::scale_loss(const Tensor& loss) const {
  return scale_ == 1.f ? loss : ops::scale(loss, scale_);
}

bool DynamicLossScaler::unscale(FlatParameters& params) {
  TS_CHECK(!unscaled_,
           "DynamicLossScaler: unscale called twice in one iteration (call update() between)");
  unscaled_ = true;
  params.sync_grads();
  const int64_t n = params.numel();
  const float inv = 1.f / scale_;
  if (!params.device().is_cpu()) {
    // One pass dividing and flagging inf/NaN; the verdict comes back to the host (a sync).
    return backend_for(params.device(), "DynamicLossScaler")
        .unscale_grads(params.grad_ptr(), n, inv);
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::unscale_grads(n));
  float* g = params.grad_data();
  int nonfinite = 0;
  // Check the unscaled values, which are what the optimizer will read.
#pragma omp parallel for simd reduction(| : nonfinite) schedule(static) if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i] * inv;
    g[i] = x;
    nonfinite |= !(std::fabs(x) <= FLT_MAX);  // NaN fails every comparison
  }
  return nonfinite == 0;
}

bool DynamicLossScaler::update(bool grads_finite) {
  unscaled_ = false;
  if (!grads_finite) {
    ++skipped_;
    clean_ = 0;
    if (opt_.enabled) scale_ = std::max(opt_.min_scale, scale_ * opt_.backoff_factor);
    return false;
  }
  if (opt_.enabled && ++clean_ >= opt_.growth_interval) {
    const float grown = scale_ * opt_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;
    clean_ = 0;
  }
  return true;
}

void DynamicLossScaler::load_state(const LossScalerState& s) {
  TS_CHECK(std::isfinite(s.scale) && s.scale > 0,
           "DynamicLossScaler: load_state: scale {} must be finite and > 0", s.scale);
  TS_CHECK(s.clean_steps >= 0 && s.skipped_steps >= 0,
           "DynamicLossScaler: load_state: negative counters (clean {}, skipped {})", s.clean_steps,
           s.skipped_steps);
  scale_ = s.scale;
  clean_ = s.clean_steps;
  skipped_ = s.skipped_steps;
  unscaled_ = false;
}

}  // namespace tessera
