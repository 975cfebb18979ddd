// attention: fused causal grouped-query self-attention (kernels/cpu/attention.h); multi-head
// attention is the case n_kv_head = n_head, and runs exactly the same arithmetic as before GQA.
// attention_window: the same kernels on a window of queries at an offset over separate keys and
// values (context parallelism); self-attention is its offset-0 case with q and kv read from the
// one qkv, so both ops share one body (attention_op) and one kernel family.
//
// Under bf16 / f16 autocast q, k, v are rounded to the autocast dtype on both backends, and so
// is the incoming gradient in the backward (as the GEMM ops round their operands and dY); the
// arithmetic stays f32 and the output and gradient are f32. On CUDA with head size 64 or 128
// the tensor-core kernels (kernels/cuda/attention_tc.h) take the 16-bit q/k/v directly; they
// also round P and dS to the 16-bit type inside (about one unit roundoff of it). Everywhere else
// (the CPU, other head sizes) the f32 kernels run on the rounded values, so the CPU result is
// exactly "f32 attention of 16-bit-rounded inputs": the reference of the GPU's.
// Without autocast (f32) nothing is rounded and both backends run their f32 kernels.
#include <type_traits>

#include "autograd/engine.h"
#include "kernels/common/attention_dims.h"
#include "kernels/cpu/attention.h"
#include "ops/autocast.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

// x rounded to the 16-bit type t and widened back to f32 (t = f32: x itself, contiguous).
Tensor rounded_f32(const Tensor& x, DType t) {
  return t == DType::f32 ? x.contiguous() : x.to(t).to(DType::f32);
}

// The dims of a fused qkv [B, T, (n_head + 2 n_kv_head) * hs], checked.
kernels::AttentionDims checked_dims(const char* op, const Tensor& qkv, int n_head, int n_kv_head) {
  check_defined(op, "qkv", qkv);
  TS_CHECK(n_head > 0 && n_kv_head > 0 && n_head % n_kv_head == 0,
           "attention: n_head = {}, n_kv_head = {}: expected n_kv_head > 0 dividing n_head > 0",
           n_head, n_kv_head);
  TS_CHECK(qkv.ndim() == 3,
           "attention: qkv is {}, expected 3 dims [B, T, (n_head + 2 n_kv_head) * head_size]",
           qkv.desc());
  TS_CHECK(qkv.dtype() == DType::f32, "attention: qkv is {}, expected dtype f32", qkv.desc());
  const int64_t heads_in_row = int64_t(n_head) + 2 * int64_t(n_kv_head);
  const int64_t width = qkv.dim(2);
  TS_CHECK(width > 0 && width % heads_in_row == 0,
           "attention: qkv is {}, n_head = {}, n_kv_head = {}: expected a last dim "
           "(n_head + 2 n_kv_head) * head_size > 0, divisible by {} (q heads | k heads | v heads)",
           qkv.desc(), n_head, n_kv_head, heads_in_row);
  const int64_t hs = width / heads_in_row;
  return {qkv.dim(0), qkv.dim(1), n_head * hs, n_head, n_kv_head};
}

// The dims of q [B, Tq, n_head * hs] and kv [B, Tk, 2 n_kv_head * hs] (k heads | v heads) at
// q_offset, checked (Tk >= q_offset + Tq: every query's keys are there).
kernels::AttentionWindowDims checked_window_dims(const char* op, const Tensor& q, const Tensor& kv,
                                                 int n_head, int n_kv_head, int64_t q_offset) {
  check_defined(op, "q", q);
  check_defined(op, "kv", kv);
  TS_CHECK(n_head > 0 && n_kv_head > 0 && n_head % n_kv_head == 0,
           "{}: n_head = {}, n_kv_head = {}: expected n_kv_head > 0 dividing n_head > 0", op,
           n_head, n_kv_head);
  TS_CHECK(q.ndim() == 3 && kv.ndim() == 3,
           "{}: q is {}, kv is {}: expected 3 dims each, q [B, Tq, n_head * head_size] and kv "
           "[B, Tk, 2 n_kv_head * head_size]",
           op, q.desc(), kv.desc());
  TS_CHECK(q.dtype() == DType::f32 && kv.dtype() == DType::f32,
           "{}: q is {}, kv is {}: expected dtype f32", op, q.desc(), kv.desc());
  TS_CHECK(q.dim(2) > 0 && q.dim(2) % n_head == 0,
           "{}: q is {}, n_head = {}: expected a last dim n_head * head_size > 0", op, q.desc(),
           n_head);
  const int64_t hs = q.dim(2) / n_head;
  TS_CHECK(kv.dim(0) == q.dim(0) && kv.dim(2) == 2 * n_kv_head * hs,
           "{}: q is {}, kv is {}, n_head = {}, n_kv_head = {}: expected kv [{}, Tk, {}] "
           "(k heads | v heads of head size {})",
           op, q.desc(), kv.desc(), n_head, n_kv_head, q.dim(0), 2 * n_kv_head * hs, hs);
  TS_CHECK(q_offset >= 0 && kv.dim(1) >= q_offset + q.dim(1),
           "{}: q is {} at q_offset = {}, kv is {}: expected q_offset >= 0 and Tk = {} >= "
           "q_offset + Tq = {} (keys up to the last query's position)",
           op, q.desc(), q_offset, kv.desc(), kv.dim(1), q_offset + q.dim(1));
  const int64_t Ckv = n_kv_head * hs;
  return {q.dim(0), q.dim(1),  kv.dim(1), q_offset, q.dim(2),
          n_head,   n_kv_head, q.dim(2),  2 * Ckv,  0};
}

// Which kernel family runs, chosen once per call from the device, autocast and the head size.
struct KernelChoice {
  Device dev;
  DType ac;  // autocast dtype: f32, bf16 or f16
  bool tensor_cores;
};

// `shown` (named `shown_name`) is the input the head-size error describes.
KernelChoice choose_kernels(const char* op, Device dev, const kernels::AttentionWindowDims& d,
                            const char* shown_name, const Tensor& shown) {
  const DType ac = autocast_dtype();
  const int64_t hs = kernels::attention_head_size(d);
  bool tensor_cores = false;
  if (is_cuda(dev)) {
    tensor_cores = ac != DType::f32 && kernels::cuda_attention_tc_supports(hs);
    TS_CHECK(tensor_cores || hs <= kernels::kCudaAttentionMaxHeadSize,
             "{}: head size {} ({} {}, n_head = {}) on {}: the CUDA kernel takes at most {}", op,
             hs, shown_name, shown.desc(), d.heads, dev.str(), kernels::kCudaAttentionMaxHeadSize);
  }
  return {dev, ac, tensor_cores};
}

// What the kernels read: the 16-bit input for the tensor cores, else f32 (rounded under
// autocast). The backward reads the same tensor.
Tensor kernel_input(const KernelChoice& k, const Tensor& x) {
  return k.tensor_cores ? x.to(k.ac) : rounded_f32(x, k.ac);
}

// The kernels' names in the cost trace, and the inputs' bytes: q and kv read once (a fused qkv,
// q and kv one tensor, once in all).
struct CostNames {
  const char* forward;
  const char* backward;
};
double input_bytes(const Tensor& q, const Tensor& kv) {
  return q.same(kv) ? cost::io_bytes({q}) : cost::io_bytes({q, kv});
}

// out and lse from the kernel inputs q and kv (one tensor twice for a fused qkv).
void run_forward(const char* op, const CostNames& names, const KernelChoice& k,
                 const kernels::AttentionWindowDims& d, const Tensor& q, const Tensor& kv,
                 Tensor& out, Tensor& lse) {
  const Device dev = k.dev;
  const double bytes = input_bytes(q, kv) + cost::io_bytes({out, lse});
  if (!meta::kernel_runs(dev, cost::attention_forward(names.forward, d, k.ac, bytes))) return;
  if (k.tensor_cores) {
    dispatch_float(k.ac, op, [&](auto tag) {
      using S = decltype(tag);
      if constexpr (!std::is_same_v<S, float>)
        device_kernels<S>(op, dev).attention_tc_window_forward(
            d, q.data<S>(), kv.data<S>(), out.data<float>(), lse.data<float>());
    });
  } else if (is_cuda(dev)) {
    device_kernels<float>(op, dev).attention_window_forward(d, q.data<float>(), kv.data<float>(),
                                                            out.data<float>(), lse.data<float>());
  } else {
    cpu::attention_window_forward(d, q.data<float>(), kv.data<float>(), out.data<float>(),
                                  lse.data<float>());
  }
}

// The backward's cost: the forward's inputs, out, lse and dout read, f32 dq and dkv written.
meta::KernelCost backward_cost(const CostNames& names, const KernelChoice& k,
                               const kernels::AttentionWindowDims& d, const Tensor& q,
                               const Tensor& kv, const Tensor& out, const Tensor& lse,
                               const Tensor& gout) {
  const int64_t grads = q.same(kv) ? q.numel() : q.numel() + kv.numel();
  const double bytes =
      input_bytes(q, kv) + cost::io_bytes({out, lse, gout}) + cost::bytes_of(grads, DType::f32);
  return cost::attention_backward(names.backward, d, k.ac, bytes);
}

// dq and dkv (possibly one buffer) from the incoming gradient g.
void run_backward(const char* op, const CostNames& names, const KernelChoice& k,
                  const kernels::AttentionWindowDims& d, const Tensor& q, const Tensor& kv,
                  const Tensor& out, const Tensor& lse, const Tensor& g, float* dq, float* dkv) {
  const Device dev = k.dev;
  meta::scratch(dev, {cuda_scratch::attention_delta(d.batch * d.heads * d.q_seq)});
  if (k.tensor_cores) {  // dout f32, rounded to the 16-bit type inside the kernels
    const Tensor gout = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
    if (!meta::kernel_runs(dev, backward_cost(names, k, d, q, kv, out, lse, gout))) return;
    dispatch_float(k.ac, op, [&](auto tag) {
      using S = decltype(tag);
      if constexpr (!std::is_same_v<S, float>)
        device_kernels<S>(op, dev).attention_tc_window_backward(
            d, q.data<S>(), kv.data<S>(), out.data<float>(), lse.data<float>(), gout.data<float>(),
            dq, dkv);
    });
    return;
  }
  // The incoming gradient rounded like the tensor-core kernels round it (no-op in f32).
  const Tensor gout = rounded_f32(g.dtype() == DType::f32 ? g : g.to(DType::f32), k.ac);
  if (!meta::kernel_runs(dev, backward_cost(names, k, d, q, kv, out, lse, gout))) return;
  if (is_cuda(dev))
    device_kernels<float>(op, dev).attention_window_backward(d, q.data<float>(), kv.data<float>(),
                                                             out.data<float>(), lse.data<float>(),
                                                             gout.data<float>(), dq, dkv);
  else
    cpu::attention_window_backward(d, q.data<float>(), kv.data<float>(), out.data<float>(),
                                   lse.data<float>(), gout.data<float>(), dq, dkv);
}

// Both ops. Self-attention passes its fused qkv as both q and kv (fused = true: one input, one
// gradient, dq and dkv its column ranges); the window op passes q and kv.
Tensor attention_op(const char* op, const kernels::AttentionWindowDims& d, const Tensor& q,
                    const Tensor& kv, bool fused) {
  const Device dev = fused ? q.device() : common_device(op, {{"q", q}, {"kv", kv}});
  const CostNames names = fused ? CostNames{"attention_fwd", "attention_bwd"}
                                : CostNames{"attention_window_fwd", "attention_window_bwd"};
  const KernelChoice k = choose_kernels(op, dev, d, fused ? "qkv" : "q", q);
  const Tensor kq = kernel_input(k, q);
  const Tensor kkv = fused ? kq : kernel_input(k, kv);
  const bool empty = d.batch * d.q_seq == 0;
  Tensor out = Tensor::empty(Shape{d.batch, d.q_seq, d.channels}, DType::f32, dev);
  // Per-row log-sum-exp: all backward needs beyond q, kv and out to rebuild the probabilities.
  Tensor lse = Tensor::empty(Shape{d.batch, d.heads, d.q_seq}, DType::f32, dev);
  if (!empty) run_forward(op, names, k, d, kq, kkv, out, lse);
  if (!autograd::needs_grad({q, kv})) return out;
  // A detached alias of out: capturing out itself would make its node own it (a cycle).
  Tensor saved_out = out.detach();
  // No query (empty): no gradient anywhere, so zeros, not the kernels' output.
  auto grad_buffer = [=](const Tensor& x) {
    return empty ? Tensor::zeros(x.shape(), DType::f32, dev)
                 : Tensor::empty(x.shape(), DType::f32, dev);
  };
  auto backward = [=](const Tensor& g, const Tensor& dq, const Tensor& dkv) {
    if (!empty)
      run_backward(op, names, k, d, kq, kkv, saved_out, lse, g, dq.data<float>(),
                   dkv.data<float>());
  };
  if (fused)
    return autograd::record(out, op, {q}, [=](const Tensor& g) {
      Tensor dqkv = grad_buffer(q);
      backward(g, dqkv, dqkv);
      return std::vector<Tensor>{dqkv};
    });
  return autograd::record(out, op, {q, kv}, [=](const Tensor& g) {
    Tensor dq = grad_buffer(q), dkv = grad_buffer(kv);
    backward(g, dq, dkv);
    return std::vector<Tensor>{dq, dkv};
  });
}

}  // namespace

Tensor attention(const Tensor& qkv0, int n_head) {
  return attention(qkv0, n_head, n_head);
}

Tensor attention(const Tensor& qkv, int n_head, int n_kv_head) {
  const char* op = "attention";
  const kernels::AttentionDims dims = checked_dims(op, qkv, n_head, n_kv_head);
  return attention_op(op, kernels::attention_window_of(dims), qkv, qkv, /*fused=*/true);
}

Tensor attention_window(const Tensor& q, const Tensor& kv, int n_head, int n_kv_head,
                        int64_t q_offset) {
  const char* op = "attention_window";
  return attention_op(op, checked_window_dims(op, q, kv, n_head, n_kv_head, q_offset), q, kv,
                      /*fused=*/false);
}

}  // namespace tessera::ops
