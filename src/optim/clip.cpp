#include "optim/clip.h"

#include <cmath>

#include "core/backend.h"
#include "core/meta_device.h"
#include "kernels/cpu/elementwise.h"

namespace tessera {

double grad_norm(FlatParameters& params) {
  params.sync_grads();
  // Padding is zero, so the whole buffer can be summed in one pass.
  if (!params.device().is_cpu())  // f64, in a fixed order
    return std::sqrt(
        backend_for(params.device(), "grad_norm").sum_squares(params.grad_ptr(), params.numel()));
  meta::kernel_runs(Device::cpu(), meta::table_cost::sum_squares(params.numel()));
  return std::sqrt(cpu::sum_squares(params.grad_data(), params.numel()));
}

void scale_grads(FlatParameters& params, float factor) {
  params.sync_grads();
  float* g = params.grad_ptr();
  if (!params.device().is_cpu()) {
    backend_for(params.device(), "scale_grads").scale(g, factor, params.numel());
    return;
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::scale(params.numel()));
  cpu::scale(g, g, factor, params.numel());
}

double clip_grad_norm(FlatParameters& params, double max_norm) {
  TS_CHECK(max_norm > 0 && std::isfinite(max_norm),
           "clip_grad_norm: max_norm {} must be finite and > 0", max_norm);
  const double norm = grad_norm(params);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  scale_grads(params, float(max_norm / norm));
  return norm;
}

double unscale_and_clip(FlatParameters& params, double max_norm, float grad_scale) {
  TS_CHECK(max_norm >= 0 && std::isfinite(max_norm),
           "unscale_and_clip: max_norm {} must be finite and >= 0", max_norm);
  TS_CHECK(grad_scale > 0 && std::isfinite(grad_scale),
           "unscale_and_clip: grad_scale {} must be finite and > 0", grad_scale);
  const double norm = grad_norm(params) / double(grad_scale);
  if (!std::isfinite(norm)) return norm;
  double factor = 1.0 / double(grad_scale);
  if (max_norm > 0 && norm > max_norm) factor *= max_norm / norm;
  if (factor != 1.0) scale_grads(params, float(factor));
  return norm;
}

}  // namespace tessera
