// What the ops' kernels cost (core/meta_device.h's KernelCost), computed from shapes at each
// launch site: `if (meta::kernel_runs(dev, cost)) { ...launch... }`. One helper per kind of
// kernel: GEMMs (their GemmArgs), fused causal attention, and memory-bound passes whose bytes are
// each operand read once and each output written once, at their dtypes.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "core/meta_device.h"
#include "core/tensor.h"
#include "kernels/common/activation.h"
#include "kernels/common/attention_dims.h"
#include "kernels/common/gemm_args.h"

namespace tessera::ops::cost {

// Bytes of n elements of type t.
inline double bytes_of(int64_t n, DType t) {
  return double(n) * double(dtype_size(t));
}

// Bytes of tensors each read or written once, whole (undefined tensors count nothing).
double io_bytes(std::initializer_list<Tensor> tensors);

// A memory-bound pass over `elements` that reads or writes each of `tensors` once, whole. Its
// dtype is the first defined tensor's: a pass over bf16 activations moves half the bytes of an
// f32 one but does the same arithmetic per element, and the local calibration (plan/kernel_fit.h)
// fits the two apart.
meta::KernelCost pass(const char* name, int64_t elements, std::initializer_list<Tensor> tensors,
                      double flops_per_element = 1);

// k keyed by dtype t for the local calibration (a fused pass whose input is f32 whatever the
// compute dtype, named by the dtype it runs in).
inline meta::KernelCost in_dtype(meta::KernelCost k, DType t) {
  k.dtype = t;
  return k;
}

// FLOPs per element of an activation's forward, as the cost model counts them (tanh GELU 8,
// SiLU 4, ReLU 1); its backward counts twice as many.
constexpr double activation_flops(kernels::Activation act) {
  switch (act) {
    case kernels::Activation::gelu:
      return 8;
    case kernels::Activation::silu:
      return 4;
    case kernels::Activation::relu:
      return 1;
  }
  return 1;
}

// The GEMM g describes (batch x [m, k] · [k, n] in g.ab_type), named by its label.
meta::KernelCost gemm(const kernels::GemmArgs& g);

// Fused causal attention (class attention). Query i of a window sits at position q_offset + i and
// sees keys 0 .. q_offset + i, so one (batch, head) computes
//   pairs = sum_{i < Tq} (q_offset + i + 1) = Tq q_offset + Tq (Tq + 1) / 2
// query-key pairs (Tq (Tq + 1) / 2 for self-attention; the masked half is not counted). Each
// pair costs 2 hs FLOPs for S = Q K^T and 2 hs for O = P V, so
//   forward  = 4 B H hs pairs,
//   backward = 10 B H hs pairs (2.5x): a flash backward recomputes S and runs dV = P^T dO,
//              dP = dO V^T, dQ = dS K and dK = dS^T Q: five products of the forward's size.
// Softmax and scaling are not counted (O(pairs), not O(pairs hs)). `operands` is the type q, k
// and v are rounded to (autocast's), `bytes` what the kernel reads and writes.
double causal_pairs(int64_t q_seq, int64_t q_offset);
meta::KernelCost attention_forward(const char* name, const kernels::AttentionWindowDims& d,
                                   DType operands, double bytes);
meta::KernelCost attention_backward(const char* name, const kernels::AttentionWindowDims& d,
                                    DType operands, double bytes);

}  // namespace tessera::ops::cost

namespace tessera::ops {

// A launch that runs several kernels' work at once (conv2d's backward: dX, dW and db in one
// call): records each part; whether the launch runs (false on the meta device).
bool kernels_run(Device dev, const std::vector<meta::KernelCost>& parts);

}  // namespace tessera::ops
