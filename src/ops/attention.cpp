// attention: fused causal grouped-query self-attention (kernels/cpu/attention.h); multi-head
// attention is the case n_kv_head = n_head, and runs exactly the same arithmetic as before GQA.
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

}  // namespace

Tensor attention(const Tensor& qkv0, int n_head) {
  return attention(qkv0, n_head, n_head);
}

Tensor attention(const Tensor& qkv0, int n_head, int n_kv_head) {
  const char* op = "attention";
  const kernels::AttentionDims dims = checked_dims(op, qkv0, n_head, n_kv_head);
  const Device dev = qkv0.device();
  const int64_t B = dims.batch, T = dims.seq, C = dims.channels;
  const int64_t hs = kernels::attention_head_size(dims);

  const DType ac = autocast_dtype();  // f32, bf16 or f16
  bool tensor_cores = false;
  if (is_cuda(dev)) {
    tensor_cores = ac != DType::f32 && kernels::cuda_attention_tc_supports(hs);
    TS_CHECK(
        tensor_cores || hs <= kernels::kCudaAttentionMaxHeadSize,
        "attention: head size {} (qkv {}, n_head = {}) on {}: the CUDA kernel takes at most {}", hs,
        qkv0.desc(), n_head, dev.str(), kernels::kCudaAttentionMaxHeadSize);
  }
  // What the kernels read: the 16-bit qkv for the tensor cores, else f32 (rounded under
  // autocast). The backward reads the same tensor.
  Tensor qkv = tensor_cores ? qkv0.to(ac) : rounded_f32(qkv0, ac);
  Tensor out = Tensor::empty(Shape{B, T, C}, DType::f32, dev);
  // Per-row log-sum-exp: all backward needs beyond qkv and out to rebuild the probabilities.
  Tensor lse = Tensor::empty(Shape{B, n_head, T}, DType::f32, dev);
  if (B * T > 0) {
    if (tensor_cores) {
      dispatch_float(ac, op, [&](auto tag) {
        using S = decltype(tag);
        if constexpr (!std::is_same_v<S, float>)
          TS_CUDA(op, dev,
                  cuda::attention_tc_forward<S>(dims, qkv.data<S>(), out.data<float>(),
                                                lse.data<float>()));
      });
    } else if (is_cuda(dev)) {
      TS_CUDA(op, dev,
              cuda::attention_forward<float>(dims, qkv.data<float>(), out.data<float>(),
                                             lse.data<float>()));
    } else {
      cpu::attention_forward(dims, qkv.data<float>(), out.data<float>(), lse.data<float>());
    }
  }
  if (!autograd::needs_grad({qkv0})) return out;
  // A detached alias of out: capturing out itself would make its node own it (a cycle).
  Tensor saved_out = out.detach();
  return autograd::record(out, op, {qkv0}, [=](const Tensor& g) {
    Tensor dqkv = Tensor::empty(qkv0.shape(), DType::f32, dev);
    if (B * T == 0) return std::vector<Tensor>{dqkv};
    if (tensor_cores) {  // dout f32, rounded to the 16-bit type inside the kernels
      const Tensor gout = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
      dispatch_float(ac, op, [&](auto tag) {
        using S = decltype(tag);
        if constexpr (!std::is_same_v<S, float>)
          TS_CUDA(op, dev,
                  cuda::attention_tc_backward<S>(dims, qkv.data<S>(), saved_out.data<float>(),
                                                 lse.data<float>(), gout.data<float>(),
                                                 dqkv.data<float>()));
      });
      return std::vector<Tensor>{dqkv};
    }
    // The incoming gradient rounded like the tensor-core kernels round it (no-op in f32).
    const Tensor gout = rounded_f32(g.dtype() == DType::f32 ? g : g.to(DType::f32), ac);
    if (is_cuda(dev))
      TS_CUDA(op, dev,
              cuda::attention_backward<float>(dims, qkv.data<float>(), saved_out.data<float>(),
                                              lse.data<float>(), gout.data<float>(),
                                              dqkv.data<float>()));
    else
      cpu::attention_backward(dims, qkv.data<float>(), saved_out.data<float>(), lse.data<float>(),
                              gout.data<float>(), dqkv.data<float>());
    return std::vector<Tensor>{dqkv};
  });
}

}  // namespace tessera::ops
