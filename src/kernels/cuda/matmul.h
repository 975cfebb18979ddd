// GEMMs through cuBLASLt, row-major like cpu/matmul.h: C [batch, m, n] = op(A) · op(B)
// (+ bias) (+ C), optionally through GELU. A and B are f32, bf16 or f16 (16-bit operands run on
// tensor cores, accumulating in f32); C is f32 (default) or bf16 / f16. f32 operands use true
// f32 (CUBLAS_COMPUTE_32F) unless allow_tf32.
//
// Epilogues: bias, and bias + GELU (tanh form, GPT-2's) are fused into the GEMM by cuBLASLt
// when it offers an algorithm for the combination (f32 output); otherwise, and for 16-bit
// output (cuBLASLt wants the bias in the output type, ours is f32), one extra element-wise pass
// applies them. Either way the result is the same function. gelu_aux, when given, receives the
// pre-GELU values (x·W + b, type c_type, [batch, m, n]) for the backward.
//
// The row-major product is computed as the column-major C^T = op(B)^T op(A)^T, so no operand
// is ever transposed in memory. Plans (descriptors, layouts and the heuristic's algorithm) are
// cached per distinct shape / type / alignment; each (device, stream) has its own workspace.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device.h"
#include "kernels/common/gemm_args.h"

namespace tessera::cuda {

enum class Epilogue : uint8_t { none, bias, bias_gelu };

struct GemmArgs {
  int64_t batch = 1;  // independent products, each operand contiguous per batch entry
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false;  // A stored as [k, m] instead of [m, k]
  bool trans_b = false;  // B stored as [n, k] instead of [k, n]
  DType ab_type = DType::f32;
  const void* a = nullptr;
  const void* b = nullptr;
  Epilogue epilogue = Epilogue::none;
  const float* bias = nullptr;  // [n], f32, shared by every row and batch entry
  void* gelu_aux = nullptr;     // bias_gelu only, optional: pre-activation output (c_type)
  DType c_type = DType::f32;
  void* c = nullptr;        // [batch, m, n]
  bool accumulate = false;  // C += A·B (the epilogue applies to the sum)
  bool allow_tf32 = false;  // f32 operands: TF32 tensor cores (~1e-3 relative) instead of f32
  const char* label = nullptr;
};

void gemm(const GemmArgs& g, cudaStream_t s = current_stream());
// The plain GEMM as the CPU backend takes it (the bias as the bias epilogue, f32 output), so an
// op runs either backend with the same arguments.
void gemm(const kernels::GemmArgs& g, cudaStream_t s = current_stream());

// Distinct cuBLASLt plans built so far (a training step should stop adding them after step 1).
int64_t gemm_plan_count();
// GEMMs whose epilogue ran as a separate pass because cuBLASLt had no fused algorithm.
int64_t gemm_unfused_epilogue_count();

}  // namespace tessera::cuda
