// softmax over the last dim, and cross_entropy: the fused log-softmax + negative log likelihood
// whose backward writes (softmax - onehot) / count straight into the logits' gradient.
#include <string>

#include "autograd/engine.h"
#include "kernels/common/cross_entropy.h"
#include "kernels/cpu/softmax.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {
// FLOPs per element the cost model counts: max, exp, sum and normalise (log-softmax and the
// loss likewise); the backward's dot product and update.
constexpr double kSoftmaxFlops = 4, kSoftmaxBackwardFlops = 3;

// The fused cross-entropy backward: logits, targets and lse read, the gradient written.
meta::KernelCost xent_backward_cost(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                    const Tensor& grad) {
  return cost::pass("softmax_xent_bwd", logits.numel(), {logits, targets, lse, grad},
                    kSoftmaxBackwardFlops);
}
}  // namespace

Tensor softmax(const Tensor& x0) {
  const char* op = "softmax";
  check_float(op, "x", x0);
  const Device dev = x0.device();
  TS_CHECK(x0.ndim() >= 1, "softmax: input {} is a scalar: expected at least 1 dim", x0.desc());
  Tensor x = x0.contiguous();
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (meta::kernel_runs(dev, cost::pass("softmax_fwd", rows * C, {x, y}, kSoftmaxFlops))) {
      if (is_cuda(dev))
        device_kernels<T>(op, dev).softmax_forward(x.data<T>(), y.data<T>(), rows, C);
      else
        cpu::softmax_forward<T>(x.data<T>(), y.data<T>(), rows, C);
    }
  });
  Tensor saved = y.detach();  // not y itself: y's own node holding y would be a cycle
  return autograd::record(y, op, {x0}, [saved, rows, C, dev](const Tensor& g) {
    Tensor gy = g.to(DType::f32).contiguous();
    Tensor gx = Tensor::empty(saved.shape(), saved.dtype(), dev);
    dispatch_float(saved.dtype(), "softmax", [&](auto tag) {
      using T = decltype(tag);
      const meta::KernelCost c =
          cost::pass("softmax_bwd", rows * C, {saved, gy, gx}, kSoftmaxBackwardFlops);
      if (meta::kernel_runs(dev, c)) {
        if (is_cuda(dev))
          device_kernels<T>("softmax", dev)
              .softmax_backward(saved.data<T>(), gy.data<float>(), gx.data<T>(), rows, C);
        else
          cpu::softmax_backward<T>(saved.data<T>(), gy.data<float>(), gx.data<T>(), rows, C);
      }
    });
    return std::vector<Tensor>{gx};
  });
}

Tensor cross_entropy(const Tensor& logits0, const Tensor& targets0, int32_t ignore_index) {
  return cross_entropy(logits0, targets0, ignore_index, DType::f32);
}

Tensor cross_entropy(const Tensor& logits0, const Tensor& targets0, int32_t ignore_index,
                     DType grad_dtype) {
  const char* op = "cross_entropy";
  TS_CHECK(grad_dtype == DType::f32 || grad_dtype == DType::bf16,
           "cross_entropy: gradient dtype {}: expected f32 or bf16", dtype_name(grad_dtype));
  check_dtype(op, "logits", logits0, DType::f32);
  check_dtype(op, "targets", targets0, DType::i32);
  const Device dev = common_device(op, {{"logits", logits0}, {"targets", targets0}});
  TS_CHECK(logits0.ndim() >= 1 && logits0.dim(-1) > 0,
           "cross_entropy: logits {} have no class dim: expected [..., V] with V > 0",
           logits0.desc());
  std::vector<int64_t> expect = logits0.shape().vec();
  expect.pop_back();
  TS_CHECK(targets0.shape() == Shape(expect),
           "cross_entropy: targets {} do not fit logits {}: expected targets {}", targets0.desc(),
           logits0.desc(), Shape(expect).str());
  Tensor logits = logits0.contiguous(), targets = targets0.contiguous();
  const int64_t V = logits.dim(-1), rows = targets.numel();
  // The range check reads the targets on the host: on a device, the host copy kept from their
  // upload (Storage::host_mirror), so no wait for the device; none on the meta device (no values).
  const int64_t count = dev.is_meta()
                            ? 0
                            : count_checked_targets(op, targets.to(Device::cpu()), V, "V",
                                                    ignore_index, " for logits " + logits.desc());
  Tensor lse = Tensor::empty(Shape{rows}, DType::f32, dev);
  Tensor loss;
  const meta::KernelCost fwd =
      cost::pass("softmax_xent_fwd", rows * V, {logits, targets, lse}, kSoftmaxFlops);
  if (is_cuda(dev)) {  // the mean stays on the device: nothing returns to the host
    loss = Tensor::empty(Shape{}, DType::f32, dev);
    meta::scratch(dev, {cuda_scratch::row_loss(rows)});
    if (meta::kernel_runs(dev, fwd))
      device_kernels<float>(op, dev).cross_entropy_forward(
          logits.data<float>(), targets.data<int32_t>(), lse.data<float>(), loss.data<float>(),
          rows, V, ignore_index);
  } else {
    kernels::CrossEntropySum s;  // the meta device computes nothing: a loss of 0
    if (meta::kernel_runs(dev, fwd))
      s = cpu::cross_entropy_forward(logits.data<float>(), targets.data<int32_t>(),
                                     lse.data<float>(), rows, V, ignore_index);
    // With every target ignored there is nothing to average: the loss is 0, and so are the grads.
    loss = Tensor::full(Shape{}, s.count ? s.loss / double(s.count) : 0.0, DType::f32, dev);
  }
  Tensor xs = logits.detach();
  return autograd::record(loss, op, {logits0, targets0}, [=](const Tensor& g) {
    Tensor gx = Tensor::empty(xs.shape(), grad_dtype, dev);
    if (is_cuda(dev)) {
      // The incoming gradient is read by the kernel on the device (no item()). It writes the
      // gradient in grad_dtype directly, each element rounded once from f32 as on the CPU (no
      // f32 [rows, V] in between: 1.6 GB for GPT-2 at 8 x 1024 tokens).
      const Tensor g32 = g.to(DType::f32).contiguous();
      if (meta::kernel_runs(dev, xent_backward_cost(xs, targets, lse, gx))) {
        if (grad_dtype == DType::bf16)
          device_kernels<bf16>(op, dev).cross_entropy_backward(
              xs.data<float>(), targets.data<int32_t>(), lse.data<float>(), g32.data<float>(),
              count, gx.data<bf16>(), rows, V, ignore_index);
        else
          device_kernels<float>(op, dev).cross_entropy_backward(
              xs.data<float>(), targets.data<int32_t>(), lse.data<float>(), g32.data<float>(),
              count, gx.data<float>(), rows, V, ignore_index);
      }
      return std::vector<Tensor>{gx, Tensor()};
    }
    if (!meta::kernel_runs(dev, xent_backward_cost(xs, targets, lse, gx)))
      return std::vector<Tensor>{gx, Tensor()};
    const float scale = count ? g.item() / float(count) : 0.f;
    if (grad_dtype == DType::bf16)
      cpu::cross_entropy_backward<bf16>(xs.data<float>(), targets.data<int32_t>(),
                                        lse.data<float>(), scale, gx.data<bf16>(), rows, V,
                                        ignore_index);
    else
      cpu::cross_entropy_backward<float>(xs.data<float>(), targets.data<int32_t>(),
                                         lse.data<float>(), scale, gx.data<float>(), rows, V,
                                         ignore_index);
    return std::vector<Tensor>{gx, Tensor()};
  });
}

}  // namespace tessera::ops
