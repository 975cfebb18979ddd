// Softmax over the last dim of a [rows, C] buffer, and the fused softmax + negative log
// likelihood (cross-entropy) over [rows, V] logits. f32 arithmetic throughout.
#pragma once
#include <cstdint>

#include "core/half.h"
#include "kernels/common/cross_entropy.h"

namespace tessera::cpu {

// y = softmax(x) per row (storage type T: float, bf16 or f16).
template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t C);
// gx = y * (gy - sum(gy * y)) per row, from the saved output y and an f32 incoming gradient.
template <class T>
void softmax_backward(const T* y, const float* gy, T* gx, int64_t rows, int64_t C);

// Targets must already be valid (in [0, V) or ignore_index). Writes lse[r] = log sum exp of row
// r (0 for ignored rows) for the backward. The sum runs over rows in order: reproducible.
kernels::CrossEntropySum cross_entropy_forward(const float* logits, const int32_t* targets,
                                               float* lse, int64_t rows, int64_t V,
                                               int32_t ignore_index);
// gx[r] = scale * (softmax(logits[r]) - onehot(targets[r])), and 0 for ignored rows; softmax is
// recomputed from lse, so nothing but gx is written.
// gx is stored as TG: f32, or bf16 when the logits came from a bf16 GEMM whose backward would
// round it to bf16 anyway (then written once, half the bytes, no separate cast).
template <class TG>
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                            float scale, TG* gx, int64_t rows, int64_t V, int32_t ignore_index);

}  // namespace tessera::cpu
