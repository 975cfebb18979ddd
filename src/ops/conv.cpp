// conv2d and max_pool2d (kernels/cpu/conv.h).
#include "kernels/cpu/conv.h"
#include "autograd/engine.h"
#include "ops/autocast.h"
#include "ops/check.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {

Tensor conv2d(const Tensor& x0, const Tensor& w0, const Tensor& b0, int stride, int padding) {
  const char* op = "conv2d";
  check_dtype(op, "x", x0, DType::f32);
  check_dtype(op, "weight", w0, DType::f32);
  check_cpu(op, x0);
  check_cpu(op, w0);
  TS_CHECK(x0.ndim() == 4, "conv2d: x is {}, expected 4 dims [N, Cin, H, W]", x0.desc());
  TS_CHECK(w0.ndim() == 4, "conv2d: weight is {}, expected 4 dims [Cout, Cin, kh, kw]", w0.desc());
  TS_CHECK(x0.dim(1) == w0.dim(1),
           "conv2d: x {} has {} channels but weight {} expects Cin = {}: expected x [N, {}, H, W]",
           x0.desc(), x0.dim(1), w0.desc(), w0.dim(1), w0.dim(1));
  TS_CHECK(stride >= 1 && padding >= 0,
           "conv2d: stride {} and padding {} for x {}: expected stride >= 1, padding >= 0", stride,
           padding, x0.desc());
  cpu::Conv2dDims d;
  d.n = x0.dim(0), d.cin = x0.dim(1), d.h = x0.dim(2), d.w = x0.dim(3);
  d.cout = w0.dim(0), d.kh = w0.dim(2), d.kw = w0.dim(3);
  d.stride = stride, d.pad = padding;
  TS_CHECK(d.kh >= 1 && d.kw >= 1 && d.h + 2 * d.pad >= d.kh && d.w + 2 * d.pad >= d.kw,
           "conv2d: weight {} does not fit x {} with padding {}: expected a kernel no larger "
           "than the padded input {}x{}",
           w0.desc(), x0.desc(), padding, d.h + 2 * d.pad, d.w + 2 * d.pad);
  if (b0.defined()) {
    check_dtype(op, "bias", b0, DType::f32);
    check_cpu(op, b0);
    TS_CHECK(b0.ndim() == 1 && b0.dim(0) == d.cout, "conv2d: bias {} for weight {}: expected [{}]",
             b0.desc(), w0.desc(), d.cout);
  }
  d.infer_output();
  const DType compute = autocast_dtype();
  TS_CHECK(compute == DType::f32 || compute == DType::bf16,
           "conv2d: autocast dtype {} unsupported on cpu (expected f32 or bf16)",
           dtype_name(compute));

  Tensor x = x0.contiguous(), w = w0.contiguous();
  Tensor b = b0.defined() ? b0.contiguous() : Tensor();
  Tensor y = Tensor::empty(Shape{d.n, d.cout, d.ho, d.wo});
  cpu::conv2d_forward(d, x.data<float>(), w.data<float>(), b.defined() ? b.data<float>() : nullptr,
                      y.data<float>(), compute);
  const bool need_x = x0.requires_grad(), need_w = w0.requires_grad();
  const bool need_b = b0.defined() && b0.requires_grad();
  return autograd::record(y, op, {x0, w0, b0}, [=](const Tensor& g) {
    Tensor gy = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
    Tensor gx = need_x ? Tensor::empty(x.shape()) : Tensor();
    Tensor gw = need_w ? Tensor::empty(w.shape()) : Tensor();
    Tensor gb = need_b ? Tensor::empty(b.shape()) : Tensor();
    cpu::conv2d_backward(d, x.data<float>(), w.data<float>(), gy.data<float>(),
                         need_x ? gx.data<float>() : nullptr, need_w ? gw.data<float>() : nullptr,
                         need_b ? gb.data<float>() : nullptr, compute);
    return std::vector<Tensor>{gx, gw, gb};
  });
}

Tensor max_pool2d(const Tensor& x0, int kernel, int stride) {
  const char* op = "max_pool2d";
  check_float(op, "x", x0);
  check_cpu(op, x0);
  TS_CHECK(x0.ndim() == 4, "max_pool2d: x is {}, expected 4 dims [N, C, H, W]", x0.desc());
  TS_CHECK(kernel >= 1 && stride >= 1,
           "max_pool2d: kernel {} stride {} for x {}: expected kernel >= 1 and stride >= 1", kernel,
           stride, x0.desc());
  cpu::Pool2dDims d;
  d.n = x0.dim(0), d.c = x0.dim(1), d.h = x0.dim(2), d.w = x0.dim(3);
  d.kernel = kernel, d.stride = stride;
  TS_CHECK(d.h >= kernel && d.w >= kernel,
           "max_pool2d: kernel {} larger than x {}: expected H and W >= kernel (no padding)",
           kernel, x0.desc());
  d.ho = (d.h - kernel) / stride + 1, d.wo = (d.w - kernel) / stride + 1;
  Tensor x = x0.contiguous();
  Tensor y = Tensor::empty(Shape{d.n, d.c, d.ho, d.wo}, x.dtype());
  const bool grad = autograd::needs_grad({x0});
  // The window maxima's positions: all backward needs (O(output), no copy of x).
  Tensor argmax = grad ? Tensor::empty(y.shape(), DType::i32) : Tensor();
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    cpu::max_pool2d_forward<T>(d, x.data<T>(), y.data<T>(),
                               grad ? argmax.data<int32_t>() : nullptr);
  });
  if (!grad) return y;
  const DType xt = x0.dtype();
  return autograd::record(y, op, {x0}, [=](const Tensor& g) {
    Tensor gy = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
    Tensor gx = Tensor::empty(Shape{d.n, d.c, d.h, d.w});
    cpu::max_pool2d_backward(d, gy.data<float>(), argmax.data<int32_t>(), gx.data<float>());
    return std::vector<Tensor>{xt == DType::f32 ? gx : gx.to(xt)};
  });
}

}  // namespace tessera::ops
