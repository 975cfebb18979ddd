// Element-wise activations (GELU tanh form, SiLU, ReLU) and their backward passes on contiguous
// buffers. Templated over the storage type (float, bf16, f16) with f32 arithmetic; the
// per-element math lives in kernels/common/activation_math.h.
#pragma once
#include <cstdint>

#include "core/half.h"
#include "kernels/common/activation.h"

namespace tessera::cpu {

// y = act(x)
template <class T>
void activation_forward(kernels::Activation act, const T* x, T* y, int64_t n);
// gx = gy * act'(x). The incoming gradient is f32 (the autograd engine accumulates in f32).
template <class T>
void activation_backward(kernels::Activation act, const T* x, const float* gy, T* gx, int64_t n);

// The GELU of a fused linear + GELU (ops::linear_gelu), on the GEMM's f32 output h [rows, cols]:
// y = gelu(h) stored as TO (f32, or bf16 for the next GEMM under autocast).
template <class TO>
void gelu_forward_to(const float* h, TO* y, int64_t n);
// Its backward in one pass: gh = gy * gelu'(h) stored as TG (the dtype the GEMMs of the linear's
// backward take), and db[c] += sum over rows of the f32 gh (the bias gradient; skipped when db is
// null). The row sums run over fixed blocks of rows in order: the same for any thread count.
template <class TG>
void gelu_backward_bias(const float* h, const float* gy, TG* gh, float* db, int64_t rows,
                        int64_t cols);

}  // namespace tessera::cpu
