// conv2d and max_pool2d on the inputs' device: kernels/cpu/conv.h or kernels/cuda/conv.h (the
// same dims structs and arguments).
#include "kernels/cpu/conv.h"
#include "autograd/engine.h"
#include "kernels/common/conv_dims.h"
#include "ops/autocast.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

// The GEMM compute dtype of conv2d under the current autocast. f32 and bf16 are the kernels'
// own; f16 runs, on both backends, as an f32 convolution of operands rounded to f16 (x, w and
// the output gradient): a product of two f16 values is exact in f32, so this gives an f16
// GEMM's products with f32 accumulation, and the CPU and CUDA results differ only in the order
// of the f32 sums. (The CUDA kernel could take f16 operands directly through cuBLASLt: a
// three-line change in kernels/cuda/conv.cu, left out because test_cuda_shared checks that it
// refuses f16.)
struct ConvCompute {
  DType kernel;       // what the kernel is asked for
  bool round_to_f16;  // f16: operands rounded to f16 before an f32 convolution
};

ConvCompute conv_compute() {
  const DType c = autocast_dtype();
  TS_CHECK(c == DType::f32 || c == DType::bf16 || c == DType::f16,
           "conv2d: autocast dtype {} unsupported (expected f32, bf16 or f16)", dtype_name(c));
  if (c == DType::f16) return {DType::f32, true};
  return {c, false};
}

// An f32 operand as the kernel takes it: contiguous, and rounded through f16 when asked.
Tensor conv_operand(const Tensor& t, bool round_to_f16) {
  return round_to_f16 ? t.to(DType::f16).to(DType::f32) : t.contiguous();
}

// The convolution's GEMMs (im2col): per image, [Ho Wo, Cin kh kw] · [Cin kh kw, Cout] forward;
// dX's [Ho Wo, Cout] · [Cout, Cin kh kw] and dW's [Cout, Ho Wo] · [Ho Wo, Cin kh kw] backward.
int64_t conv_pixels(const kernels::Conv2dDims& d) {
  return d.ho * d.wo;
}
int64_t conv_patch(const kernels::Conv2dDims& d) {
  return d.cin * d.kh * d.kw;
}

// What cuda::conv2d_forward / conv2d_backward (kernels/cuda/conv.cu) allocate on the meta device
// playing a GPU: cuBLASLt's workspace at their first GEMM, and their scratch buffers (the
// weight and dY in the 16-bit compute type, one image's im2col columns, dX's columns in f32).
void conv_scratch(Device dev, const kernels::Conv2dDims& d, DType compute, bool forward, bool dx,
                  bool dw) {
  const int64_t K = conv_patch(d), P = conv_pixels(d), es = int64_t(dtype_size(compute));
  const bool lowp = compute != DType::f32;
  if (d.n > 0 && d.cout > 0 && K > 0 && P > 0 && (forward || dx || dw))
    meta::persistent(dev, cuda_scratch::kGemmWorkspace, cuda_scratch::kGemmWorkspaceBytes);
  if (forward) {
    meta::scratch(dev, {lowp ? size_t(d.cout * K * es) : 0, size_t(K * P * es)});
    return;
  }
  meta::scratch(dev, {dx && lowp ? size_t(d.cout * K * es) : 0, lowp ? size_t(d.cout * P * es) : 0,
                      dw ? size_t(K * P * es) : 0, dx ? size_t(K * P) * sizeof(float) : 0});
}

// conv2d_backward on the tensors' device (dx, dw, db overwritten; each may be null). Its cost:
// one GEMM per gradient asked for, and db's pass over dY.
void conv_backward(Device dev, const kernels::Conv2dDims& d, const Tensor& x, const Tensor& w,
                   const Tensor& gy, float* dx, float* dw, float* db, DType compute) {
  const int64_t P = conv_pixels(d), K = conv_patch(d);
  std::vector<meta::KernelCost> parts;
  if (dx) parts.push_back(meta::gemm_cost("conv2d_dx", d.n, P, K, d.cout, compute));
  if (dw) parts.push_back(meta::gemm_cost("conv2d_dw", d.n, d.cout, K, P, compute));
  if (db) parts.push_back(cost::pass("conv2d_db", gy.numel(), {gy}));
  conv_scratch(dev, d, compute, false, dx != nullptr, dw != nullptr);
  if (!kernels_run(dev, parts)) return;
  if (is_cuda(dev))
    device_kernels("conv2d", dev)
        .conv2d_backward(d, x.data<float>(), w.data<float>(), gy.data<float>(), dx, dw, db,
                         compute);
  else
    cpu::conv2d_backward(d, x.data<float>(), w.data<float>(), gy.data<float>(), dx, dw, db,
                         compute);
}

}  // namespace

Tensor conv2d(const Tensor& x0, const Tensor& w0, const Tensor& b0, int stride, int padding) {
  const char* op = "conv2d";
  check_dtype(op, "x", x0, DType::f32);
  check_dtype(op, "weight", w0, DType::f32);
  const Device dev = common_device(op, {{"x", x0}, {"weight", w0}, {"bias", b0}});
  TS_CHECK(x0.ndim() == 4, "conv2d: x is {}, expected 4 dims [N, Cin, H, W]", x0.desc());
  TS_CHECK(w0.ndim() == 4, "conv2d: weight is {}, expected 4 dims [Cout, Cin, kh, kw]", w0.desc());
  TS_CHECK(x0.dim(1) == w0.dim(1),
           "conv2d: x {} has {} channels but weight {} expects Cin = {}: expected x [N, {}, H, W]",
           x0.desc(), x0.dim(1), w0.desc(), w0.dim(1), w0.dim(1));
  TS_CHECK(stride >= 1 && padding >= 0,
           "conv2d: stride {} and padding {} for x {}: expected stride >= 1, padding >= 0", stride,
           padding, x0.desc());
  kernels::Conv2dDims d;
  d.n = x0.dim(0), d.cin = x0.dim(1), d.h = x0.dim(2), d.w = x0.dim(3);
  d.cout = w0.dim(0), d.kh = w0.dim(2), d.kw = w0.dim(3);
  d.stride = stride, d.pad = padding;
  TS_CHECK(d.kh >= 1 && d.kw >= 1 && d.h + 2 * d.pad >= d.kh && d.w + 2 * d.pad >= d.kw,
           "conv2d: weight {} does not fit x {} with padding {}: expected a kernel no larger "
           "than the padded input {}x{}",
           w0.desc(), x0.desc(), padding, d.h + 2 * d.pad, d.w + 2 * d.pad);
  if (b0.defined()) {
    check_dtype(op, "bias", b0, DType::f32);
    TS_CHECK(b0.ndim() == 1 && b0.dim(0) == d.cout, "conv2d: bias {} for weight {}: expected [{}]",
             b0.desc(), w0.desc(), d.cout);
  }
  d.infer_output();
  const ConvCompute cc = conv_compute();
  const DType compute = cc.kernel;
  const bool round16 = cc.round_to_f16;

  Tensor x = conv_operand(x0, round16), w = conv_operand(w0, round16);
  Tensor b = b0.defined() ? b0.contiguous() : Tensor();
  const float* bp = b.defined() ? b.data<float>() : nullptr;
  Tensor y = Tensor::empty(Shape{d.n, d.cout, d.ho, d.wo}, DType::f32, dev);
  const meta::KernelCost fwd =
      meta::gemm_cost("conv2d_fwd", d.n, conv_pixels(d), d.cout, conv_patch(d), compute);
  conv_scratch(dev, d, compute, true, false, false);
  if (meta::kernel_runs(dev, fwd)) {
    if (is_cuda(dev))
      device_kernels(op, dev).conv2d_forward(d, x.data<float>(), w.data<float>(), bp,
                                             y.data<float>(), compute);
    else
      cpu::conv2d_forward(d, x.data<float>(), w.data<float>(), bp, y.data<float>(), compute);
  }
  const bool need_x = x0.requires_grad(), need_w = w0.requires_grad();
  const bool need_b = b0.defined() && b0.requires_grad();
  return autograd::record(y, op, {x0, w0, b0}, [=](const Tensor& g) {
    Tensor gy = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
    Tensor gx = need_x ? Tensor::empty(x.shape(), DType::f32, dev) : Tensor();
    Tensor gw = need_w ? Tensor::empty(w.shape(), DType::f32, dev) : Tensor();
    Tensor gb = need_b ? Tensor::empty(b.shape(), DType::f32, dev) : Tensor();
    float* dx = need_x ? gx.data<float>() : nullptr;
    float* dw = need_w ? gw.data<float>() : nullptr;
    float* db = need_b ? gb.data<float>() : nullptr;
    if (!round16) {
      conv_backward(dev, d, x, w, gy, dx, dw, db, compute);
    } else {
      // dx and dw from dy rounded to f16 (the GEMM operand), db from dy itself (the bias
      // gradient is a plain f32 sum, as in linear). The call for db alone runs no GEMM.
      if (dx || dw) conv_backward(dev, d, x, w, conv_operand(gy, true), dx, dw, nullptr, compute);
      if (db) conv_backward(dev, d, x, w, gy, nullptr, nullptr, db, compute);
    }
    return std::vector<Tensor>{gx, gw, gb};
  });
}

Tensor max_pool2d(const Tensor& x0, int kernel, int stride) {
  const char* op = "max_pool2d";
  check_float(op, "x", x0);
  const Device dev = x0.device();
  TS_CHECK(x0.ndim() == 4, "max_pool2d: x is {}, expected 4 dims [N, C, H, W]", x0.desc());
  TS_CHECK(kernel >= 1 && stride >= 1,
           "max_pool2d: kernel {} stride {} for x {}: expected kernel >= 1 and stride >= 1", kernel,
           stride, x0.desc());
  kernels::Pool2dDims d;
  d.n = x0.dim(0), d.c = x0.dim(1), d.h = x0.dim(2), d.w = x0.dim(3);
  d.kernel = kernel, d.stride = stride;
  TS_CHECK(d.h >= kernel && d.w >= kernel,
           "max_pool2d: kernel {} larger than x {}: expected H and W >= kernel (no padding)",
           kernel, x0.desc());
  d.ho = (d.h - kernel) / stride + 1, d.wo = (d.w - kernel) / stride + 1;
  Tensor x = x0.contiguous();
  Tensor y = Tensor::empty(Shape{d.n, d.c, d.ho, d.wo}, x.dtype(), dev);
  const bool grad = autograd::needs_grad({x0});
  // The window maxima's positions: all backward needs (O(output), no copy of x).
  Tensor argmax = grad ? Tensor::empty(y.shape(), DType::i32, dev) : Tensor();
  int32_t* am = grad ? argmax.data<int32_t>() : nullptr;
  const meta::KernelCost fwd = cost::pass("max_pool2d_fwd", x.numel(), {x, y, argmax});
  if (meta::kernel_runs(dev, fwd))
    dispatch_float(x.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (is_cuda(dev))
        device_kernels<T>(op, dev).max_pool2d_forward(d, x.data<T>(), y.data<T>(), am);
      else
        cpu::max_pool2d_forward<T>(d, x.data<T>(), y.data<T>(), am);
    });
  if (!grad) return y;
  const DType xt = x0.dtype();
  return autograd::record(y, op, {x0}, [=](const Tensor& g) {
    Tensor gy = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
    Tensor gx = Tensor::empty(Shape{d.n, d.c, d.h, d.w}, DType::f32, dev);
    if (meta::kernel_runs(dev, cost::pass("max_pool2d_bwd", gx.numel(), {gy, argmax, gx}))) {
      if (is_cuda(dev))
        device_kernels("max_pool2d", dev)
            .max_pool2d_backward(d, gy.data<float>(), argmax.data<int32_t>(), gx.data<float>());
      else
        cpu::max_pool2d_backward(d, gy.data<float>(), argmax.data<int32_t>(), gx.data<float>());
    }
    return std::vector<Tensor>{xt == DType::f32 ? gx : gx.to(xt)};
  });
}

}  // namespace tessera::ops
