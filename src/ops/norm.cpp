// layer_norm and rms_norm over the last dim. x may be f32, bf16 or f16; weight and bias stay f32
// (they are parameters, updated in f32), and so do their gradients. The forward saves the
// per-row statistics (mean and 1/std), so the backward reads x once more and nothing else big.
#include "kernels/cpu/norm.h"

#include <type_traits>

#include "autograd/engine.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

// An optional per-channel parameter: undefined, or f32 [C] (on x's device: common_device).
void check_param(const char* op, const char* arg, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  check_dtype(op, arg, p, DType::f32);
  TS_CHECK(p.ndim() == 1 && p.dim(0) == x.dim(-1),
           "{}: {} {} does not fit input {}: expected [{}] (the input's last dim)", op, arg,
           p.desc(), x.desc(), x.dim(-1));
}

void check_input(const char* op, const Tensor& x, float eps) {
  check_float(op, "x", x);
  TS_CHECK(x.ndim() >= 1 && x.dim(-1) > 0,
           "{}: input {} has no last dim to normalise: expected [..., C] with C > 0", op, x.desc());
  TS_CHECK(eps >= 0.f, "{}: eps = {} for input {}: expected eps >= 0", op, eps, x.desc());
}

// FLOPs per element the cost model counts: a norm's forward (statistics, normalise, scale and
// shift) and backward (the two row reductions and the gradient).
constexpr double kNormForwardFlops = 8, kNormBackwardFlops = 12;

// The f32 buffer of an optional tensor, or null.
float* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<float>() : nullptr;
}

}  // namespace

Tensor layer_norm(const Tensor& x0, const Tensor& weight, const Tensor& bias, float eps) {
  check_defined("layer_norm", "x", x0);
  return layer_norm(x0, weight, bias, eps, x0.dtype());
}

Tensor layer_norm(const Tensor& x0, const Tensor& weight, const Tensor& bias, float eps,
                  DType out) {
  const char* op = "layer_norm";
  check_input(op, x0, eps);
  check_param(op, "weight", weight, x0);
  check_param(op, "bias", bias, x0);
  const Device dev = common_device(op, {{"x", x0}, {"weight", weight}, {"bias", bias}});
  TS_CHECK(out == x0.dtype() || (x0.dtype() == DType::f32 && is_floating(out)),
           "layer_norm: output dtype {} for input {}: expected the input's dtype, or any float "
           "type from an f32 input",
           dtype_name(out), x0.desc());
  Tensor x = x0.contiguous();
  Tensor w = weight.defined() ? weight.contiguous() : Tensor();
  Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  const int64_t C = x.dim(-1), rows = x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), is_cuda(dev) ? x.dtype() : out, dev);
  Tensor mean = Tensor::empty(Shape{rows}, DType::f32, dev),
         rstd = Tensor::empty(Shape{rows}, DType::f32, dev);
  const meta::KernelCost fwd =
      cost::pass("layer_norm_fwd", rows * C, {x, w, b, y, mean, rstd}, kNormForwardFlops);
  if (meta::kernel_runs(dev, fwd))
    dispatch_float(x.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (is_cuda(dev)) {  // the CUDA kernel writes x's type; another output type is a cast after
        device_kernels<T>(op, dev).layer_norm_forward(x.data<T>(), ptr_or_null(w), ptr_or_null(b),
                                                      y.data<T>(), mean.data<float>(),
                                                      rstd.data<float>(), rows, C, eps);
        return;
      }
      dispatch_float(out, op, [&](auto out_tag) {
        using TY = decltype(out_tag);
        if constexpr (std::is_same_v<T, TY> || std::is_same_v<T, float>)
          cpu::layer_norm_forward<T, TY>(x.data<T>(), ptr_or_null(w), ptr_or_null(b), y.data<TY>(),
                                         mean.data<float>(), rstd.data<float>(), rows, C, eps);
      });
    });
  if (y.dtype() != out) y = y.to(out);
  const bool need_x = x0.requires_grad(), need_w = w.defined() && weight.requires_grad(),
             need_b = b.defined() && bias.requires_grad();
  Tensor xs = x.detach(), ws = w.defined() ? w.detach() : Tensor();
  return autograd::record(y, op, {x0, weight, bias}, [=](const Tensor& g) {
    Tensor gy = g.to(DType::f32).contiguous();
    Tensor gx = need_x ? Tensor::empty(xs.shape(), xs.dtype(), dev) : Tensor();
    Tensor gw = need_w ? Tensor::empty(Shape{C}, DType::f32, dev) : Tensor();
    Tensor gb = need_b ? Tensor::empty(Shape{C}, DType::f32, dev) : Tensor();
    const meta::KernelCost bwd = cost::pass(
        "layer_norm_bwd", rows * C, {xs, ws, mean, rstd, gy, gx, gw, gb}, kNormBackwardFlops);
    meta::scratch(dev, {cuda_scratch::norm_param_grads(rows, C, need_w || need_b)});
    if (!meta::kernel_runs(dev, bwd)) return std::vector<Tensor>{gx, gw, gb};
    dispatch_float(xs.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (is_cuda(dev)) {
        device_kernels<T>(op, dev).layer_norm_backward(
            xs.data<T>(), ptr_or_null(ws), mean.data<float>(), rstd.data<float>(), gy.data<float>(),
            gx.defined() ? gx.data<T>() : nullptr, ptr_or_null(gw), ptr_or_null(gb), rows, C);
        return;
      }
      cpu::layer_norm_backward<T>(
          xs.data<T>(), ptr_or_null(ws), mean.data<float>(), rstd.data<float>(), gy.data<float>(),
          gx.defined() ? gx.data<T>() : nullptr, ptr_or_null(gw), ptr_or_null(gb), rows, C);
    });
    return std::vector<Tensor>{gx, gw, gb};
  });
}

Tensor rms_norm(const Tensor& x0, const Tensor& weight, float eps) {
  const char* op = "rms_norm";
  check_input(op, x0, eps);
  check_param(op, "weight", weight, x0);
  const Device dev = common_device(op, {{"x", x0}, {"weight", weight}});
  Tensor x = x0.contiguous();
  Tensor w = weight.defined() ? weight.contiguous() : Tensor();
  const int64_t C = x.dim(-1), rows = x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  Tensor rstd = Tensor::empty(Shape{rows}, DType::f32, dev);
  const meta::KernelCost fwd =
      cost::pass("rms_norm_fwd", rows * C, {x, w, y, rstd}, kNormForwardFlops);
  if (meta::kernel_runs(dev, fwd))
    dispatch_float(x.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (is_cuda(dev)) {
        device_kernels<T>(op, dev).rms_norm_forward(x.data<T>(), ptr_or_null(w), y.data<T>(),
                                                    rstd.data<float>(), rows, C, eps);
        return;
      }
      cpu::rms_norm_forward<T>(x.data<T>(), ptr_or_null(w), y.data<T>(), rstd.data<float>(), rows,
                               C, eps);
    });
  const bool need_x = x0.requires_grad(), need_w = w.defined() && weight.requires_grad();
  Tensor xs = x.detach(), ws = w.defined() ? w.detach() : Tensor();
  return autograd::record(y, op, {x0, weight}, [=](const Tensor& g) {
    Tensor gy = g.to(DType::f32).contiguous();
    Tensor gx = need_x ? Tensor::empty(xs.shape(), xs.dtype(), dev) : Tensor();
    Tensor gw = need_w ? Tensor::empty(Shape{C}, DType::f32, dev) : Tensor();
    const meta::KernelCost bwd =
        cost::pass("rms_norm_bwd", rows * C, {xs, ws, rstd, gy, gx, gw}, kNormBackwardFlops);
    meta::scratch(dev, {cuda_scratch::norm_param_grads(rows, C, need_w)});
    if (!meta::kernel_runs(dev, bwd)) return std::vector<Tensor>{gx, gw};
    dispatch_float(xs.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (is_cuda(dev)) {
        device_kernels<T>(op, dev).rms_norm_backward(
            xs.data<T>(), ptr_or_null(ws), rstd.data<float>(), gy.data<float>(),
            gx.defined() ? gx.data<T>() : nullptr, ptr_or_null(gw), rows, C);
        return;
      }
      cpu::rms_norm_backward<T>(xs.data<T>(), ptr_or_null(ws), rstd.data<float>(), gy.data<float>(),
                                gx.defined() ? gx.data<T>() : nullptr, ptr_or_null(gw), rows, C);
    });
    return std::vector<Tensor>{gx, gw};
  });
}

}  // namespace tessera::ops
