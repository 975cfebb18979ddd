// GEMMs through oneDNN's matmul primitive. A and B are f32, bf16 or f16; C is always f32 and
// products accumulate in f32. bf16 uses AVX-512-BF16 or AMX where the CPU has them; f16 is
// widened to f32 and run as an f32 GEMM (oneDNN 2.6 has no f16 matmul without AVX512-FP16;
// numerically the same as a GPU's f16 GEMM: see matmul.cpp).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace tessera::cpu {

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

// C = A·B (+ bias) (+ C). Primitives are created once per distinct shape and reused.
void gemm(const GemmArgs& g);

// Number of distinct GEMM primitives built so far (benchmarks check reuse with it).
int64_t gemm_primitive_count();

}  // namespace tessera::cpu
