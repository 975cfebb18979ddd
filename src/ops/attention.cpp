// attention: fused causal multi-head self-attention (kernels/cpu/attention.h).
// It does not consult autocast: q, k, v stay f32 under bf16 and f16 autocast alike. Both
// backends' kernels do f32 arithmetic on f32 storage (the CUDA one on CUDA cores, no tensor
// cores), so 16-bit q/k/v would add a rounding and buy no GEMM speed; the GEMMs around it
// (c_attn, c_proj) are where autocast applies.
#include "kernels/cpu/attention.h"
#include "autograd/engine.h"
#include "ops/check.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {

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

  Tensor qkv = qkv0.contiguous();
  Tensor out = Tensor::empty(Shape{B, T, C}, DType::f32, dev);
  // Per-row log-sum-exp: all backward needs beyond qkv and out to rebuild the probabilities.
  Tensor lse = Tensor::empty(Shape{B, n_head, T}, DType::f32, dev);
  const cpu::AttentionDims dims{B, T, C, n_head};
  if (is_cuda(dev)) {
#if TESSERA_HAVE_CUDA
    TS_CHECK(
        C / n_head <= cuda::kAttentionMaxHeadSize,
        "attention: head size {} (C = {}, n_head = {}) on {}: the CUDA kernel takes at most {}",
        C / n_head, C, n_head, dev.str(), cuda::kAttentionMaxHeadSize);
#endif
    if (B * T > 0)
      TS_CUDA(op, dev,
              cuda::attention_forward<float>(dims, qkv.data<float>(), out.data<float>(),
                                             lse.data<float>()));
  } else if (B * T > 0) {
    cpu::attention_forward(dims, qkv.data<float>(), out.data<float>(), lse.data<float>());
  }
  if (!autograd::needs_grad({qkv0})) return out;
  // A detached alias of out: capturing out itself would make its node own it (a cycle).
  Tensor saved_out = out.detach();
  return autograd::record(out, op, {qkv0}, [=](const Tensor& g) {
    Tensor gout = g.dtype() == DType::f32 ? g.contiguous() : g.to(DType::f32);
    Tensor dqkv = Tensor::empty(qkv.shape(), DType::f32, dev);
    if (B * T == 0) return std::vector<Tensor>{dqkv};
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
