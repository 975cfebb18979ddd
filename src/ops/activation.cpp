// gelu, silu, relu: element-wise, any float dtype; the backward keeps x (not y) and returns the
// gradient in x's dtype.
#include "kernels/cpu/activation.h"
#include "autograd/engine.h"
#include "kernels/common/activation.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

// The kernels' names, for the cost trace: forward and backward of each activation.
const char* forward_name(kernels::Activation act) {
  switch (act) {
    case kernels::Activation::gelu:
      return "gelu_fwd";
    case kernels::Activation::silu:
      return "silu_fwd";
    case kernels::Activation::relu:
      return "relu_fwd";
  }
  return "activation_fwd";
}
const char* backward_name(kernels::Activation act) {
  switch (act) {
    case kernels::Activation::gelu:
      return "gelu_bwd";
    case kernels::Activation::silu:
      return "silu_bwd";
    case kernels::Activation::relu:
      return "relu_bwd";
  }
  return "activation_bwd";
}

Tensor activation(kernels::Activation act, const char* op, const Tensor& x0) {
  check_float(op, "x", x0);
  const Device dev = x0.device();
  Tensor x = x0.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  const int64_t n = x.numel();
  const double flops = cost::activation_flops(act);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (meta::kernel_runs(dev, cost::pass(forward_name(act), n, {x, y}, flops))) {
      if (is_cuda(dev))
        device_kernels<T>(op, dev).activation_forward(act, x.data<T>(), y.data<T>(), n);
      else
        cpu::activation_forward<T>(act, x.data<T>(), y.data<T>(), n);
    }
  });
  Tensor saved = x.detach();  // data only: the closure must not hold x's autograd links
  return autograd::record(y, op, {x0}, [act, op, saved, n, dev, flops](const Tensor& g) {
    Tensor gy = g.to(DType::f32).contiguous();
    Tensor gx = Tensor::empty(saved.shape(), saved.dtype(), dev);
    dispatch_float(saved.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (meta::kernel_runs(dev, cost::pass(backward_name(act), n, {saved, gy, gx}, 2 * flops))) {
        if (is_cuda(dev))
          device_kernels<T>(op, dev).activation_backward(act, saved.data<T>(), gy.data<float>(),
                                                         gx.data<T>(), n);
        else
          cpu::activation_backward<T>(act, saved.data<T>(), gy.data<float>(), gx.data<T>(), n);
      }
    });
    return std::vector<Tensor>{gx};
  });
}

}  // namespace

Tensor gelu(const Tensor& x) {
  return activation(kernels::Activation::gelu, "gelu", x);
}
Tensor silu(const Tensor& x) {
  return activation(kernels::Activation::silu, "silu", x);
}
Tensor relu(const Tensor& x) {
  return activation(kernels::Activation::relu, "relu", x);
}

}  // namespace tessera::ops
