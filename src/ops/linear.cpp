// matmul and linear: GEMMs through oneDNN (cpu) or cuBLASLt (cuda), with mixed precision by
// autocast (bf16 or f16 operands, f32 accumulation and f32 outputs).
#include "autograd/engine.h"
#include "kernels/common/activation.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"
#include "ops/autocast.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

constexpr double kGeluFlops = cost::activation_flops(kernels::Activation::gelu);

// The operand as the GEMM wants it: contiguous, in the compute dtype.
Tensor gemm_operand(const Tensor& t, DType compute) {
  return t.dtype() == compute ? t.contiguous() : t.to(compute);
}

// The GEMM operand dtype: autocast's (f32, bf16 or f16, on either backend: the CPU's f16 GEMM
// is an f32 GEMM on f16-rounded operands, kernels/cpu/matmul.cpp). Inputs already in a 16-bit
// type compute in it whatever the autocast says.
DType compute_dtype(const Tensor& a) {
  const DType t = a.dtype();
  return t == DType::bf16 || t == DType::f16 ? t : autocast_dtype();
}

// One GEMM on the operands' device: the CUDA GEMM takes the same row-major arguments (the bias
// as its bias epilogue; output f32 like the CPU's). Its cost is stated first (cost::gemm).
void run_gemm(Device dev, const kernels::GemmArgs& g) {
  if (g.m > 0 && g.n > 0 && g.k > 0)  // cuBLASLt's workspace, on the meta device playing a GPU
    meta::persistent(dev, cuda_scratch::kGemmWorkspace, cuda_scratch::kGemmWorkspaceBytes);
  if (meta::kernel_runs(dev, cost::gemm(g))) {
    if (is_cuda(dev))
      device_kernels(g.label ? g.label : "gemm", dev).gemm(g);
    else
      cpu::gemm(g);
  }
}

}  // namespace

Tensor matmul(const Tensor& a0, const Tensor& b0) {
  const char* op = "matmul";
  check_float(op, "a", a0);
  check_float(op, "b", b0);
  const Device dev = common_device(op, {{"a", a0}, {"b", b0}});
  TS_CHECK(a0.ndim() >= 2, "matmul: a is {}, expected at least 2 dims", a0.desc());
  const bool batched = b0.ndim() == 3;
  TS_CHECK(b0.ndim() == 2 || (batched && a0.ndim() == 3 && a0.dim(0) == b0.dim(0)),
           "matmul: cannot multiply {} by {}: expected b [k, n], or a [B, m, k] with b [B, k, n]",
           a0.desc(), b0.desc());
  const int64_t k = a0.dim(-1);
  TS_CHECK(b0.dim(-2) == k, "matmul: inner dims differ: {} by {} (a's last {} vs b's {})",
           a0.desc(), b0.desc(), k, b0.dim(-2));
  const int64_t n = b0.dim(-1);
  const int64_t batch = batched ? a0.dim(0) : 1;
  const int64_t m = a0.numel() / k / batch;
  const DType ct = compute_dtype(a0);
  Tensor a = gemm_operand(a0, ct), b = gemm_operand(b0, ct);
  std::vector<int64_t> out_dims = a0.shape().vec();
  out_dims.back() = n;
  Tensor y = Tensor::empty(Shape(out_dims), DType::f32, dev);
  cpu::GemmArgs g;
  g.batch = batch, g.m = m, g.n = n, g.k = k, g.ab_type = ct;
  g.a = a.raw_data(), g.b = b.raw_data(), g.c = y.data<float>();
  g.label = "matmul_fwd";
  run_gemm(dev, g);
  const bool need_a = a0.requires_grad(), need_b = b0.requires_grad();
  DType at = a0.dtype(), bt = b0.dtype();
  return autograd::record(y, op, {a0, b0}, [=](const Tensor& gy0) {
    Tensor gy = gemm_operand(gy0, ct);
    Tensor ga, gb;
    if (need_a) {  // dA[m,k] = dY[m,n] · B[k,n]^T
      ga = Tensor::empty(a0.shape(), DType::f32, dev);
      cpu::GemmArgs d;
      d.batch = batch, d.m = m, d.n = k, d.k = n, d.ab_type = ct, d.trans_b = true;
      d.a = gy.raw_data(), d.b = b.raw_data(), d.c = ga.data<float>();
      d.label = "matmul_da";
      run_gemm(dev, d);
      if (at != DType::f32) ga = ga.to(at);
    }
    if (need_b) {  // dB[k,n] = A[m,k]^T · dY[m,n]
      gb = Tensor::empty(b0.shape(), DType::f32, dev);
      cpu::GemmArgs d;
      d.batch = batch, d.m = k, d.n = n, d.k = m, d.ab_type = ct, d.trans_a = true;
      d.a = a.raw_data(), d.b = gy.raw_data(), d.c = gb.data<float>();
      d.label = "matmul_db";
      run_gemm(dev, d);
      if (bt != DType::f32) gb = gb.to(bt);
    }
    return std::vector<Tensor>{ga, gb};
  });
}

namespace {

// Checks the operands of linear / linear_gelu; returns the number of rows m of x.
int64_t check_linear(const char* op, const Tensor& x0, const Tensor& w0, const Tensor& b0) {
  check_float(op, "x", x0);
  check_float(op, "weight", w0);
  common_device(op, {{"x", x0}, {"weight", w0}, {"bias", b0}});
  check_ndim(op, "weight", w0, 2);
  const int64_t in = w0.dim(1), out = w0.dim(0);
  TS_CHECK(x0.ndim() >= 1 && x0.dim(-1) == in,
           "{}: input {} does not fit weight {}: expected input [..., {}]", op, x0.desc(),
           w0.desc(), in);
  if (b0.defined()) {
    check_dtype(op, "bias", b0, DType::f32);
    TS_CHECK(b0.ndim() == 1 && b0.dim(0) == out, "{}: bias {} for weight {}: expected [{}]", op,
             b0.desc(), w0.desc(), out);
  }
  return x0.numel() / in;
}

// Y[m, out] (f32) = X[m, in] · W[out, in]^T + b, operands in the compute dtype.
Tensor linear_gemm(const Tensor& x0, const Tensor& x, const Tensor& w, const Tensor& b0, DType ct,
                   int64_t m) {
  const int64_t in = w.dim(1), out = w.dim(0);
  Tensor bias = b0.defined() ? b0.contiguous() : Tensor();
  std::vector<int64_t> out_dims = x0.shape().vec();
  out_dims.back() = out;
  Tensor y = Tensor::empty(Shape(out_dims), DType::f32, x.device());
  cpu::GemmArgs g;
  g.m = m, g.n = out, g.k = in, g.ab_type = ct, g.trans_b = true;
  g.a = x.raw_data(), g.b = w.raw_data(), g.c = y.data<float>();
  g.bias = bias.defined() ? bias.data<float>() : nullptr;
  g.label = "linear_fwd";
  run_gemm(x.device(), g);
  return y;
}

// The backward GEMMs of a linear layer from dY (gy, already in the compute dtype ct):
// dX = dY · W (returned in f32 whatever x's dtype: the engine accumulates gradients in f32, and
// rounding them to bf16 / f16 would only lose digits) and dW = dY^T · X, added straight into the
// weight's gradient buffer when it has one (FlatParameters): no temporary, no separate add.
struct LinearSaved {
  Tensor x, w, w0;  // GEMM operands (compute dtype) and the weight as given
  DType ct;
  int64_t m;
  Shape xs;
  bool need_x, need_w;
};

std::pair<Tensor, Tensor> linear_backward_gemms(const LinearSaved& s, const Tensor& gy) {
  const int64_t in = s.w.dim(1), out = s.w.dim(0);
  const Device dev = s.x.device();
  Tensor gx, gw;
  if (s.need_x) {  // dX[m,in] = dY[m,out] · W[out,in]
    gx = Tensor::empty(s.xs, DType::f32, dev);
    cpu::GemmArgs d;
    d.m = s.m, d.n = in, d.k = out, d.ab_type = s.ct;
    d.a = gy.raw_data(), d.b = s.w.raw_data(), d.c = gx.data<float>();
    d.label = "linear_dx";
    run_gemm(dev, d);
  }
  if (s.need_w) {  // dW[out,in] = dY[m,out]^T · X[m,in]
    const DType wt = s.w0.dtype();
    Tensor acc = wt == DType::f32 ? autograd::leaf_grad_buffer(s.w0) : Tensor();
    if (!acc.defined()) gw = Tensor::empty(s.w0.shape(), DType::f32, dev);
    cpu::GemmArgs d;
    d.m = out, d.n = in, d.k = s.m, d.ab_type = s.ct, d.trans_a = true;
    d.a = gy.raw_data(), d.b = s.x.raw_data();
    d.c = acc.defined() ? acc.data<float>() : gw.data<float>();
    d.accumulate = acc.defined();
    d.label = "linear_dw";
    run_gemm(dev, d);
    if (gw.defined() && wt != DType::f32) gw = gw.to(wt);
  }
  return {gx, gw};
}

// Where the bias gradient goes: the bias's own gradient buffer when it has one (added into), or
// a fresh zeroed gb returned to the engine.
float* bias_grad_target(const Tensor& b0, int64_t out, Tensor* gb) {
  Tensor acc = autograd::leaf_grad_buffer(b0);
  if (acc.defined()) return acc.data<float>();
  *gb = Tensor::zeros(Shape{out}, DType::f32, b0.device());
  return gb->data<float>();
}

// y = gelu(h) in the compute dtype ct (the next GEMM's operand) from the f32 GEMM output h.
// The CPU kernel writes f32 or bf16 in the same pass. Otherwise GELU runs in f32 and one cast
// rounds it (the same rounding): on CUDA, as its own pass rather than cuBLASLt's fused
// epilogue, which may use a hardware tanh (this keeps the CPU's function), and on the CPU for
// f16 (its kernel has no f16 output instantiated).
Tensor gelu_for_gemm(const Tensor& h, DType ct) {
  const Device dev = h.device();
  const int64_t n = h.numel();
  if (!is_cuda(dev) && ct == DType::bf16) {
    Tensor y = Tensor::empty(h.shape(), ct, dev);
    if (meta::kernel_runs(dev,
                          cost::in_dtype(cost::pass("linear_gelu_fwd", n, {h, y}, kGeluFlops), ct)))
      cpu::gelu_forward_to<bf16>(h.data<float>(), y.data<bf16>(), n);
    return y;
  }
  Tensor y32 = Tensor::empty(h.shape(), DType::f32, dev);
  if (meta::kernel_runs(
          dev, cost::in_dtype(cost::pass("linear_gelu_fwd", n, {h, y32}, kGeluFlops), ct))) {
    if (is_cuda(dev))
      device_kernels<float>("linear_gelu", dev)
          .activation_forward(kernels::Activation::gelu, h.data<float>(), y32.data<float>(), n);
    else
      cpu::gelu_forward_to<float>(h.data<float>(), y32.data<float>(), n);
  }
  return ct == DType::f32 ? y32 : y32.to(ct);
}

// What the GELU backward with the bias gradient moves: h and dY read, dH written, db (out f32)
// read and written when there is one.
meta::KernelCost gelu_grad_cost(const Tensor& h, const Tensor& gy, const Tensor& gh,
                                const float* db, int64_t out, DType ct) {
  const double bias = db ? 2 * cost::bytes_of(out, DType::f32) : 0;
  return cost::in_dtype(meta::memory_bound_cost("linear_gelu_bwd", h.numel(),
                                                cost::io_bytes({h, gy, gh}) + bias, 2 * kGeluFlops),
                        ct);
}

// Its backward: dH = dY * gelu'(H) in ct for the linear's backward GEMMs, and db += the column
// sums of the f32 dH (db null: no bias gradient). One pass on the CPU for f32 and bf16; else
// dH in f32, the bias gradient from it (as the CPU does), then one cast.
Tensor gelu_grad_for_gemm(const Tensor& h, const Tensor& gy, DType ct, float* db, int64_t m,
                          int64_t out) {
  const Device dev = h.device();
  if (!is_cuda(dev) && ct == DType::bf16) {
    Tensor gh = Tensor::empty(h.shape(), ct, dev);
    if (meta::kernel_runs(dev, gelu_grad_cost(h, gy, gh, db, out, ct)))
      cpu::gelu_backward_bias<bf16>(h.data<float>(), gy.data<float>(), gh.data<bf16>(), db, m, out);
    return gh;
  }
  Tensor gh32 = Tensor::empty(h.shape(), DType::f32, dev);
  if (db) meta::scratch(dev, {cuda_scratch::sum_rows(m, out)});  // cuda::sum_rows_acc's partials
  if (meta::kernel_runs(dev, gelu_grad_cost(h, gy, gh32, db, out, ct))) {
    if (is_cuda(dev)) {  // two launches: the GELU gradient, then the bias gradient's column sums
      device_kernels<float>("linear_gelu", dev)
          .activation_backward(kernels::Activation::gelu, h.data<float>(), gy.data<float>(),
                               gh32.data<float>(), h.numel());
      if (db)
        device_kernels<float>("linear_gelu", dev).sum_rows_acc(gh32.data<float>(), db, m, out);
    } else {
      cpu::gelu_backward_bias<float>(h.data<float>(), gy.data<float>(), gh32.data<float>(), db, m,
                                     out);
    }
  }
  return ct == DType::f32 ? gh32 : gh32.to(ct);
}

// The bias gradient's pass: dY [m, out] read (in its dtype), db [out] f32 read and written, and
// the dY copy in the GEMM dtype written when it is made in the same pass.
meta::KernelCost bias_grad_cost(const char* name, const Tensor& gy, const Tensor& gy_copy,
                                int64_t out) {
  return meta::memory_bound_cost(
      name, gy.numel(), cost::io_bytes({gy, gy_copy}) + 2 * cost::bytes_of(out, DType::f32));
}

}  // namespace

Tensor linear(const Tensor& x0, const Tensor& w0, const Tensor& b0) {
  const char* op = "linear";
  const int64_t m = check_linear(op, x0, w0, b0);
  const DType ct = compute_dtype(x0);
  Tensor x = gemm_operand(x0, ct), w = gemm_operand(w0, ct);
  Tensor y = linear_gemm(x0, x, w, b0, ct, m);
  const bool need_b = b0.defined() && b0.requires_grad();
  const LinearSaved saved{x, w, w0, ct, m, x0.shape(), x0.requires_grad(), w0.requires_grad()};
  return autograd::record(y, op, {x0, w0, b0}, [saved, b0, need_b](const Tensor& gy0) {
    const int64_t out = saved.w.dim(0);
    Tensor gb;
    float* db = need_b ? bias_grad_target(b0, out, &gb) : nullptr;  // db = column sums of dY
    Tensor gy;
    const Device dev = saved.x.device();
    if (!is_cuda(dev) && saved.ct == DType::bf16 && gy0.dtype() == DType::f32) {
      // One pass over the f32 gradient: its bf16 copy for the GEMMs and the bias gradient.
      Tensor g32 = gy0.contiguous();
      gy = Tensor::empty(g32.shape(), DType::bf16, dev);
      const meta::KernelCost c = db ? bias_grad_cost("linear_bias_grad_cast", g32, gy, out)
                                    : cost::pass("linear_grad_cast", g32.numel(), {g32, gy});
      if (meta::kernel_runs(dev, c))
        cpu::cast_sum_rows_acc(g32.data<float>(), gy.data<bf16>(), db, saved.m, out);
    } else {
      gy = gemm_operand(gy0, saved.ct);
      if (db) {
        Tensor g = gy0.contiguous();
        dispatch_float(g.dtype(), "linear", [&](auto tag) {
          using T = decltype(tag);
          meta::scratch(dev, {cuda_scratch::sum_rows(saved.m, out)});
          if (meta::kernel_runs(dev, bias_grad_cost("linear_bias_grad", g, Tensor(), out))) {
            if (is_cuda(dev))
              device_kernels<T>("linear", dev).sum_rows_acc(g.data<T>(), db, saved.m, out);
            else
              cpu::sum_rows_acc<T>(g.data<T>(), db, saved.m, out);
          }
        });
      }
    }
    auto [gx, gw] = linear_backward_gemms(saved, gy);
    return std::vector<Tensor>{gx, gw, gb};
  });
}

Tensor linear_gelu(const Tensor& x0, const Tensor& w0, const Tensor& b0) {
  const char* op = "linear_gelu";
  const int64_t m = check_linear(op, x0, w0, b0);
  const DType ct = compute_dtype(x0);
  Tensor x = gemm_operand(x0, ct), w = gemm_operand(w0, ct);
  Tensor h = linear_gemm(x0, x, w, b0, ct, m);  // pre-activation, f32, kept for backward
  Tensor y = gelu_for_gemm(h, ct);
  const bool need_b = b0.defined() && b0.requires_grad();
  const LinearSaved saved{x, w, w0, ct, m, x0.shape(), x0.requires_grad(), w0.requires_grad()};
  return autograd::record(y, op, {x0, w0, b0}, [saved, b0, need_b, h](const Tensor& g) {
    const int64_t out = saved.w.dim(0);
    Tensor gy = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
    Tensor gb;
    float* db = need_b ? bias_grad_target(b0, out, &gb) : nullptr;
    Tensor gh = gelu_grad_for_gemm(h, gy, saved.ct, db, saved.m, out);
    auto [gx, gw] = linear_backward_gemms(saved, gh);
    return std::vector<Tensor>{gx, gw, gb};
  });
}

}  // namespace tessera::ops
