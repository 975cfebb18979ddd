// LayerNorm and RMSNorm over the last dim of a [rows, C] buffer. x, y and gx use the storage type
// T (float, bf16, f16); weight, bias, their gradients and the saved statistics are f32, and all
// arithmetic is f32. Any of weight / bias may be null (scale 1, shift 0).
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::cpu {

// y = (x - mean) * rstd * w + b per row; writes mean[rows] and rstd[rows] for the backward.
// y may be stored in another type TY than x (an f32 residual stream normalised straight into the
// bf16 input of the next GEMM).
template <class T, class TY = T>
void layer_norm_forward(const T* x, const float* w, const float* b, TY* y, float* mean, float* rstd,
                        int64_t rows, int64_t C, float eps);

// From gy (f32): gx (skipped when null), and dw, db [C] (overwritten; skipped when null).
// The parameter gradients are reduced over fixed blocks of rows in a fixed order, so they are
// bit-identical for any thread count.
template <class T>
void layer_norm_backward(const T* x, const float* w, const float* mean, const float* rstd,
                         const float* gy, T* gx, float* dw, float* db, int64_t rows, int64_t C);

// y = x * rstd * w per row, rstd = 1 / sqrt(mean(x^2) + eps); writes rstd[rows].
template <class T>
void rms_norm_forward(const T* x, const float* w, T* y, float* rstd, int64_t rows, int64_t C,
                      float eps);

// From gy (f32): gx (skipped when null) and dw [C] (overwritten; skipped when null).
template <class T>
void rms_norm_backward(const T* x, const float* w, const float* rstd, const float* gy, T* gx,
                       float* dw, int64_t rows, int64_t C);

}  // namespace tessera::cpu
