// attention: fused causal multi-head self-attention (kernels/cpu/attention.h).
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

}  // namespace

Tensor attention(const Tensor& qkv0, int n_head) {
  const char* op = "attention";
  check_defined(op, "qkv", qkv0);
  const Device dev = qkv0.device();
  TS_CHECK(qkv0.ndim() == 3, "attention: qkv is {}, expected 3 dims [B, T, 3C]", qkv0.desc());
  TS_CHECK(qkv0.dtype() == DType::f32, "attention: qkv is {}, expected dtype f32", qkv0.desc());
  const int64_t B = qkv0.dim(0), T = qkv0.dim(1), C3 = qkv0.dim(2);
  TS_CHECK(C3 % 3 == 0 && C3 > 0,
           "attention: qkv is {}, expected a last dim 3C > 0 divisible by 3 (q | k | v)",
           qkv0.desc());
  const int64_t C = C3 / 3;
  TS_CHECK(n_head > 0 && C % n_head == 0,
           "attention: qkv is {} (C = {}), n_head = {}: expected n_head > 0 dividing C",
           qkv0.desc(), C, n_head);

  const DType ac = autocast_dtype();  // f32, bf16 or f16
  bool tensor_cores = false;
  if (is_cuda(dev)) {
    tensor_cores = ac != DType::f32 && kernels::cuda_attention_tc_supports(C / n_head);
    TS_CHECK(
        tensor_cores || C / n_head <= kernels::kCudaAttentionMaxHeadSize,
        "attention: head size {} (C = {}, n_head = {}) on {}: the CUDA kernel takes at most {}",
        C / n_head, C, n_head, dev.str(), kernels::kCudaAttentionMaxHeadSize);
  }
  // What the kernels read: the 16-bit qkv for the tensor cores, else f32 (rounded under
  // autocast). The backward reads the same tensor.
  Tensor qkv = tensor_cores ? qkv0.to(ac) : rounded_f32(qkv0, ac);
  Tensor out = Tensor::empty(Shape{B, T, C}, DType::f32, dev);
  // Per-row log-sum-exp: all backward needs beyond qkv and out to rebuild the probabilities.
  Tensor lse = Tensor::empty(Shape{B, n_head, T}, DType::f32, dev);
  const kernels::AttentionDims dims{B, T, C, n_head};
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
