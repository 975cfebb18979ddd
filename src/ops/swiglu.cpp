// swiglu: silu(gate) * up over x [..., 2F] laid out (gate | up), fused (kernels/cpu/swiglu.h).
//
// Dtypes follow linear_gelu, whose output likewise feeds the next GEMM: an f32 input (a linear
// layer's output) gives an output in the GEMM compute dtype (autocast's: f32, or bf16 / f16,
// written in the same pass: the down projection's operand with no cast pass; the numbers of
// silu(gate) * up in f32 rounded once); a 16-bit input keeps its dtype. The backward takes the
// f32 incoming gradient and returns the input's gradient in the input's dtype (as gelu does).
#include "kernels/cpu/swiglu.h"

#include "autograd/engine.h"
#include "ops/autocast.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {

// FLOPs per output element: silu(gate) (the activation's count) times up.
constexpr double kSwigluFlops = cost::activation_flops(kernels::Activation::silu) + 1;

Tensor swiglu(const Tensor& x0) {
  const char* op = "swiglu";
  check_float(op, "x", x0);
  TS_CHECK(x0.ndim() >= 1 && x0.dim(-1) > 0 && x0.dim(-1) % 2 == 0,
           "swiglu: x is {}, expected [..., 2F] laid out (gate | up): a last dim even and > 0",
           x0.desc());
  const Device dev = x0.device();
  const Tensor x = x0.contiguous();
  const int64_t F = x.dim(-1) / 2, rows = x.numel() / (2 * F);
  const DType out_dtype = x.dtype() == DType::f32 ? autocast_dtype() : x.dtype();
  std::vector<int64_t> out_dims = x.shape().vec();
  out_dims.back() = F;
  Tensor y = Tensor::empty(Shape(out_dims), out_dtype, dev);
  dispatch_float(x.dtype(), op, [&](auto in_tag) {
    using TI = decltype(in_tag);
    dispatch_float(out_dtype, op, [&](auto out_tag) {
      using TO = decltype(out_tag);
      if (meta::kernel_runs(dev, cost::pass("swiglu_fwd", rows * F, {x, y}, kSwigluFlops))) {
        if (is_cuda(dev))
          kernels::swiglu_forward_to<TO>(device_kernels<TI>(op, dev))(x.data<TI>(), y.data<TO>(),
                                                                      rows, F);
        else
          cpu::swiglu_forward<TI, TO>(x.data<TI>(), y.data<TO>(), rows, F);
      }
    });
  });
  const Tensor saved = x.detach();  // data only: the closure must not hold x's autograd links
  return autograd::record(y, op, {x0}, [op, saved, rows, F, dev](const Tensor& g) {
    const Tensor gy = g.to(DType::f32).contiguous();
    Tensor gx = Tensor::empty(saved.shape(), saved.dtype(), dev);
    dispatch_float(saved.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const meta::KernelCost c =
          cost::pass("swiglu_bwd", rows * F, {saved, gy, gx}, 2 * kSwigluFlops);
      if (meta::kernel_runs(dev, c)) {
        if (is_cuda(dev))
          device_kernels<T>(op, dev).swiglu_backward(saved.data<T>(), gy.data<float>(),
                                                     gx.data<T>(), rows, F);
        else
          cpu::swiglu_backward<T>(saved.data<T>(), gy.data<float>(), gx.data<T>(), rows, F);
      }
    });
    return std::vector<Tensor>{gx};
  });
}

}  // namespace tessera::ops
