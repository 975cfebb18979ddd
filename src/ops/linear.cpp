// matmul and linear: GEMMs through oneDNN, with mixed precision by autocast.
#include "autograd/engine.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"
#include "ops/autocast.h"
#include "ops/check.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

// The operand as the GEMM wants it: contiguous, in the compute dtype.
Tensor gemm_operand(const Tensor& t, DType compute) {
  return t.dtype() == compute ? t.contiguous() : t.to(compute);
}

DType compute_dtype(const char* op, const Tensor& a) {
  DType c = autocast_dtype();
  TS_CHECK(c == DType::f32 || c == DType::bf16, "{}: autocast dtype {} unsupported on cpu", op,
           dtype_name(c));
  // Inputs already in bf16 compute in bf16 whatever the autocast says.
  return a.dtype() == DType::bf16 ? DType::bf16 : c;
}

}  // namespace

Tensor matmul(const Tensor& a0, const Tensor& b0) {
  const char* op = "matmul";
  check_float(op, "a", a0);
  check_float(op, "b", b0);
  check_cpu(op, a0);
  check_cpu(op, b0);
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
  const DType ct = compute_dtype(op, a0);
  Tensor a = gemm_operand(a0, ct), b = gemm_operand(b0, ct);
  std::vector<int64_t> out_dims = a0.shape().vec();
  out_dims.back() = n;
  Tensor y = Tensor::empty(Shape(out_dims));
  cpu::GemmArgs g;
  g.batch = batch, g.m = m, g.n = n, g.k = k, g.ab_type = ct;
  g.a = a.raw_data(), g.b = b.raw_data(), g.c = y.data<float>();
  cpu::gemm(g);
  const bool need_a = a0.requires_grad(), need_b = b0.requires_grad();
  DType at = a0.dtype(), bt = b0.dtype();
  return autograd::record(y, op, {a0, b0}, [=](const Tensor& gy0) {
    Tensor gy = gemm_operand(gy0, ct);
    Tensor ga, gb;
    if (need_a) {  // dA[m,k] = dY[m,n] · B[k,n]^T
      ga = Tensor::empty(a0.shape());
      cpu::GemmArgs d;
      d.batch = batch, d.m = m, d.n = k, d.k = n, d.ab_type = ct, d.trans_b = true;
      d.a = gy.raw_data(), d.b = b.raw_data(), d.c = ga.data<float>();
      cpu::gemm(d);
      if (at != DType::f32) ga = ga.to(at);
    }
    if (need_b) {  // dB[k,n] = A[m,k]^T · dY[m,n]
      gb = Tensor::empty(b0.shape());
      cpu::GemmArgs d;
      d.batch = batch, d.m = k, d.n = n, d.k = m, d.ab_type = ct, d.trans_a = true;
      d.a = a.raw_data(), d.b = gy.raw_data(), d.c = gb.data<float>();
      cpu::gemm(d);
      if (bt != DType::f32) gb = gb.to(bt);
    }
    return std::vector<Tensor>{ga, gb};
  });
}

Tensor linear(const Tensor& x0, const Tensor& w0, const Tensor& b0) {
  const char* op = "linear";
  check_float(op, "x", x0);
  check_float(op, "weight", w0);
  check_cpu(op, x0);
  check_cpu(op, w0);
  check_ndim(op, "weight", w0, 2);
  const int64_t in = w0.dim(1), out = w0.dim(0);
  TS_CHECK(x0.ndim() >= 1 && x0.dim(-1) == in,
           "linear: input {} does not fit weight {}: expected input [..., {}]", x0.desc(),
           w0.desc(), in);
  if (b0.defined()) {
    check_dtype(op, "bias", b0, DType::f32);
    TS_CHECK(b0.ndim() == 1 && b0.dim(0) == out, "linear: bias {} for weight {}: expected [{}]",
             b0.desc(), w0.desc(), out);
  }
  const int64_t m = x0.numel() / in;
  const DType ct = compute_dtype(op, x0);
  Tensor x = gemm_operand(x0, ct), w = gemm_operand(w0, ct);
  Tensor bias = b0.defined() ? b0.contiguous() : Tensor();
  std::vector<int64_t> out_dims = x0.shape().vec();
  out_dims.back() = out;
  Tensor y = Tensor::empty(Shape(out_dims));
  cpu::GemmArgs g;  // Y[m,out] = X[m,in] · W[out,in]^T + b
  g.m = m, g.n = out, g.k = in, g.ab_type = ct, g.trans_b = true;
  g.a = x.raw_data(), g.b = w.raw_data(), g.c = y.data<float>();
  g.bias = bias.defined() ? bias.data<float>() : nullptr;
  g.label = "linear_fwd";
  cpu::gemm(g);
  const bool need_x = x0.requires_grad(), need_w = w0.requires_grad();
  const bool need_b = b0.defined() && b0.requires_grad();
  DType xt = x0.dtype(), wt = w0.dtype();
  Shape xs = x0.shape(), ws = w0.shape();
  return autograd::record(y, op, {x0, w0, b0}, [=](const Tensor& gy0) {
    Tensor gy = gemm_operand(gy0, ct);
    Tensor gx, gw, gb;
    if (need_x) {  // dX[m,in] = dY[m,out] · W[out,in]
      gx = Tensor::empty(xs);
      cpu::GemmArgs d;
      d.m = m, d.n = in, d.k = out, d.ab_type = ct;
      d.a = gy.raw_data(), d.b = w.raw_data(), d.c = gx.data<float>();
      d.label = "linear_dx";
      cpu::gemm(d);
      if (xt != DType::f32) gx = gx.to(xt);
    }
    if (need_w) {  // dW[out,in] = dY[m,out]^T · X[m,in]
      // Added straight into the weight's gradient buffer when it has one (FlatParameters):
      // the GEMM accumulates into it, no temporary and no separate add.
      Tensor acc = wt == DType::f32 ? autograd::leaf_grad_buffer(w0) : Tensor();
      if (!acc.defined()) gw = Tensor::empty(ws);
      cpu::GemmArgs d;
      d.m = out, d.n = in, d.k = m, d.ab_type = ct, d.trans_a = true;
      d.a = gy.raw_data(), d.b = x.raw_data();
      d.c = acc.defined() ? acc.data<float>() : gw.data<float>();
      d.accumulate = acc.defined();
      d.label = "linear_dw";
      cpu::gemm(d);
      if (gw.defined() && wt != DType::f32) gw = gw.to(wt);
    }
    if (need_b) {  // db = column sums of dY (in f32 whatever the compute type)
      Tensor acc = autograd::leaf_grad_buffer(b0);
      if (!acc.defined()) gb = Tensor::zeros(Shape{out});
      Tensor g32 = gy0.to(DType::f32).contiguous();
      cpu::sum_rows_acc<float>(g32.data<float>(),
                               acc.defined() ? acc.data<float>() : gb.data<float>(), m, out);
    }
    return std::vector<Tensor>{gx, gw, gb};
  });
}

}  // namespace tessera::ops
