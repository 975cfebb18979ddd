// Element-wise kernels on contiguous buffers. Float kernels are templated over the storage type
// (float, bf16, f16) and compute in f32; OpenMP splits large buffers across threads.
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::cpu {

// Work below this many elements stays on one thread: a parallel region costs more.
constexpr int64_t kParallelGrain = 1 << 15;

// y = a + b, where b repeats every nb elements of a (nb == n for same shapes).
template <class T>
void add(const T* a, const T* b, T* y, int64_t n, int64_t nb);
// y = a * b, with the same repetition rule.
template <class T>
void mul(const T* a, const T* b, T* y, int64_t n, int64_t nb);
// y = s * x
template <class T>
void scale(const T* x, T* y, float s, int64_t n);
// y[j] += sum over rows of x[r, j]   (reduce a [rows, cols] buffer over its rows, f32 out;
// summed over fixed row blocks, bit-identical for any thread count: kernels/cpu/reduce.h)
template <class T>
void sum_rows_acc(const T* x, float* y, int64_t rows, int64_t cols);
// One pass of both: out = bf16(x) and y[j] += sum over rows of x[r, j] (y may be null): a
// linear layer's output gradient as the bf16 GEMM operand, and its bias gradient from the f32.
void cast_sum_rows_acc(const float* x, bf16* out, float* y, int64_t rows, int64_t cols);

// f32 helpers used by the autograd engine and optimizers.
void add_inplace(float* dst, const float* src, int64_t n);
void axpy(float* y, const float* x, float a, int64_t n);  // y += a * x
double sum(const float* x, int64_t n);                    // pairwise-free f64 accumulation
double sum_squares(const float* x, int64_t n);

}  // namespace tessera::cpu
