#include "optim/clip.h"

#include <cmath>

#include "kernels/cpu/elementwise.h"

namespace tessera {

double grad_norm(FlatParameters& params) {
  params.sync_grads();
  // Padding is zero, so the whole buffer can be summed in one pass.
  return std::sqrt(cpu::sum_squares(params.grad_data(), params.numel()));
}

double clip_grad_norm(FlatParameters& params, double max_norm) {
  TS_CHECK(max_norm > 0 && std::isfinite(max_norm),
           "clip_grad_norm: max_norm {} must be finite and > 0", max_norm);
  const double norm = grad_norm(params);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  float* g = params.grad_data();
  cpu::scale(g, g, float(max_norm / norm), params.numel());
  return norm;
}

}  // namespace tessera
