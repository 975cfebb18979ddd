// dropout: the mask comes from (seed, offset) of the generator, reserved with g.advance(n), so
// it is thread-count invariant and the backward regenerates it rather than storing it.
#include <cmath>

#include "autograd/engine.h"
#include "kernels/cpu/dropout.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {

// FLOPs per element: the counter-based draw (a few integer rounds, counted as 4) and the scale.
constexpr double kDropoutFlops = 5;

Tensor dropout(const Tensor& x0, float p, Generator& gen, bool training) {
  const char* op = "dropout";
  check_float(op, "x", x0);
  TS_CHECK(p >= 0.f && p < 1.f, "dropout: p = {} for input {} is out of range: expected 0 <= p < 1",
           p, x0.desc());
  // Identity: x itself, so the gradient flows straight through and nothing is drawn.
  if (!training || p == 0.f) return x0;
  Tensor x = x0.contiguous();
  const int64_t n = x.numel();
  const uint64_t seed = gen.seed(), offset = gen.advance(uint64_t(n));
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (meta::kernel_runs(dev, cost::pass("dropout_fwd", n, {x, y}, kDropoutFlops))) {
      if (is_cuda(dev))  // the same mask bit for bit (counter_rng.cuh)
        device_kernels<T>(op, dev).dropout_forward(x.data<T>(), y.data<T>(), n, p, seed, offset);
      else
        cpu::dropout_forward<T>(x.data<T>(), y.data<T>(), n, p, seed, offset);
    }
  });
  const Shape shape = x.shape();
  const DType dt = x.dtype();
  return autograd::record(y, op, {x0}, [=](const Tensor& g) {
    Tensor gy = g.to(DType::f32).contiguous();
    Tensor gx = Tensor::empty(shape, dt, dev);
    dispatch_float(dt, op, [&](auto tag) {
      using T = decltype(tag);
      if (meta::kernel_runs(dev, cost::pass("dropout_bwd", n, {gy, gx}, kDropoutFlops))) {
        if (is_cuda(dev))
          device_kernels<T>(op, dev).dropout_backward(gy.data<float>(), gx.data<T>(), n, p, seed,
                                                      offset);
        else
          cpu::dropout_backward<T>(gy.data<float>(), gx.data<T>(), n, p, seed, offset);
      }
    });
    return std::vector<Tensor>{gx};
  });
}

}  // namespace tessera::ops
