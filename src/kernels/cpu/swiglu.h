// SwiGLU (Llama's MLP activation) fused: one pass forward, one backward, over x [rows, 2F] laid
// out (gate | up) as one fused gate_up linear layer writes it. f32 arithmetic; the SiLU is
// kernels/common/activation_math.h's (the same function as ops::silu, on both backends).
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::cpu {

// y [rows, F] = silu(gate) * up, stored as TO (the input's type, or the next GEMM's compute
// type: f32 in, bf16 out under bf16 autocast, in the same pass).
template <class TI, class TO>
void swiglu_forward(const TI* x, TO* y, int64_t rows, int64_t F);

// gx [rows, 2F] = (gy * up * silu'(gate) | gy * silu(gate)) from gy [rows, F] (f32).
template <class T>
void swiglu_backward(const T* x, const float* gy, T* gx, int64_t rows, int64_t F);

}  // namespace tessera::cpu
