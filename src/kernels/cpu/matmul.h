// GEMMs through oneDNN's matmul primitive. A and B are f32, bf16 or f16; C is always f32 and
// products accumulate in f32. bf16 uses AVX-512-BF16 or AMX where the CPU has them; f16 is
// widened to f32 and run as an f32 GEMM (oneDNN 2.6 has no f16 matmul without AVX512-FP16;
// numerically the same as a GPU's f16 GEMM: see matmul.cpp).
#pragma once
#include <cstdint>
#include <string>

#include "core/device_peak.h"
#include "core/dtype.h"
#include "kernels/common/gemm_args.h"

namespace tessera::cpu {

// The argument struct both backends share (kernels/common/gemm_args.h).
using GemmArgs = kernels::GemmArgs;

// C = A·B (+ bias) (+ C). Primitives are created once per distinct shape and reused.
void gemm(const GemmArgs& g);

// Number of distinct GEMM primitives built so far (benchmarks check reuse with it).
int64_t gemm_primitive_count();

// oneDNN's implementation of a large GEMM ([1024, 1024] x [1024, 1024]^T, as linear() runs
// them) with operands of type t, as oneDNN names it ("brg:avx512_core_amx_bf16"): which unit
// runs this CPU's GEMMs. Asked once per dtype (no primitive is built or cached).
const std::string& gemm_implementation(DType t);

// This CPU's datasheet peak (core/cpu_peak.h) for `threads` OpenMP threads, bf16 counted on
// AMX when oneDNN's bf16 GEMM runs there: what MFU on the CPU divides by.
DevicePeak gemm_datasheet_peak(int threads);

}  // namespace tessera::cpu
