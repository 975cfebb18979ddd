#include "optim/clip.h"

#include <cmath>

#include "kernels/cpu/elementwise.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace tessera {

double grad_norm(FlatParameters& params) {
  params.sync_grads();
  // Padding is zero, so the whole buffer can be summed in one pass.
  if (!params.device().is_cpu()) {
#if TESSERA_HAVE_CUDA
    return std::sqrt(cuda::sum_squares(params.grad_ptr(), params.numel()));  // f64, fixed order
#else
    fail("grad_norm: gradients on {} but Tessera was built without CUDA", params.device().str());
#endif
  }
  return std::sqrt(cpu::sum_squares(params.grad_data(), params.numel()));
}

double clip_grad_norm(FlatParameters& params, double max_norm) {
  TS_CHECK(max_norm > 0 && std::isfinite(max_norm),
           "clip_grad_norm: max_norm {} must be finite and > 0", max_norm);
  const double norm = grad_norm(params);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  float* g = params.grad_ptr();
  if (!params.device().is_cpu()) {
#if TESSERA_HAVE_CUDA
    cuda::scale<float>(g, g, float(max_norm / norm), params.numel());
#endif
    return norm;
  }
  cpu::scale(g, g, float(max_norm / norm), params.numel());
  return norm;
}

}  // namespace tessera
