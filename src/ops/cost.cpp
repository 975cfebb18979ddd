#include "ops/cost.h"

namespace tessera::ops::cost {

double io_bytes(std::initializer_list<Tensor> tensors) {
  double b = 0;
  for (const Tensor& t : tensors)
    if (t.defined()) b += double(t.nbytes());
  return b;
}

meta::KernelCost pass(const char* name, int64_t elements, std::initializer_list<Tensor> tensors,
                      double flops_per_element) {
  meta::KernelCost k =
      meta::memory_bound_cost(name, elements, io_bytes(tensors), flops_per_element);
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    k.dtype = t.dtype();
    break;
  }
  return k;
}

meta::KernelCost gemm(const kernels::GemmArgs& g) {
  return meta::gemm_cost(g.label ? g.label : "gemm", g.batch, g.m, g.n, g.k, g.ab_type);
}

double causal_pairs(int64_t q_seq, int64_t q_offset) {
  return double(q_seq) * double(q_offset) + double(q_seq) * double(q_seq + 1) / 2;
}

namespace {
meta::KernelCost attention_cost(const char* name, const kernels::AttentionWindowDims& d,
                                DType operands, double bytes, double flops_per_pair_and_dim) {
  meta::KernelCost c;
  c.name = name;
  c.cls = meta::KernelClass::attention;
  c.dtype = operands;
  c.bytes = bytes;
  c.flops = flops_per_pair_and_dim * double(d.batch) * double(d.heads) *
            double(kernels::attention_head_size(d)) * causal_pairs(d.q_seq, d.q_offset);
  return c;
}
}  // namespace

meta::KernelCost attention_forward(const char* name, const kernels::AttentionWindowDims& d,
                                   DType operands, double bytes) {
  return attention_cost(name, d, operands, bytes, 4);
}

meta::KernelCost attention_backward(const char* name, const kernels::AttentionWindowDims& d,
                                    DType operands, double bytes) {
  return attention_cost(name, d, operands, bytes, 10);
}

}  // namespace tessera::ops::cost

namespace tessera::ops {

bool kernels_run(Device dev, const std::vector<meta::KernelCost>& parts) {
  bool runs = !dev.is_meta();
  for (const meta::KernelCost& c : parts) runs = meta::kernel_runs(dev, c);
  return runs;
}

}  // namespace tessera::ops
