// GEMMs through oneDNN's matmul primitive. A and B are f32, bf16 or f16; C is always f32 and
// products accumulate in f32. bf16 uses AVX-512-BF16 or AMX where the CPU has them; f16 is
// widened to f32 and run as an f32 GEMM (oneDNN 2.6 has no f16 matmul without AVX512-FP16;
// numerically the same as a GPU's f16 GEMM: see matmul.cpp).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/gemm_args.h"

namespace tessera::cpu {

// The argument struct both backends share (kernels/common/gemm_args.h).
using GemmArgs = kernels::GemmArgs;

// C = A·B (+ bias) (+ C). Primitives are created once per distinct shape and reused.
void gemm(const GemmArgs& g);

// Number of distinct GEMM primitives built so far (benchmarks check reuse with it).
int64_t gemm_primitive_count();

}  // namespace tessera::cpu
