// The plain GEMM both backends run (cpu/matmul.h, cuda/matmul.h), row-major:
// C [batch, m, n] = op(A) · op(B) (+ bias) (+ C), C f32. The CUDA backend's own GemmArgs adds
// fused epilogues and 16-bit output for the code that calls it directly.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace tessera::kernels {

struct GemmArgs {
  int64_t batch = 1;  // independent products, each operand contiguous per batch entry
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false;  // A stored as [k, m] instead of [m, k]
  bool trans_b = false;  // B stored as [n, k] instead of [k, n]
  DType ab_type = DType::f32;
  const void* a = nullptr;
  const void* b = nullptr;
  const float* bias = nullptr;  // [n], added to every row (batch must be 1)
  float* c = nullptr;           // [batch, m, n]
  bool accumulate = false;      // C += A·B instead of C = A·B
  const char* label = nullptr;  // what the profiler calls this GEMM (a string literal)
};

}  // namespace tessera::kernels
