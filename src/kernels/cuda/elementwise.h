// Element-wise kernels on contiguous device buffers, mirroring cpu/elementwise.h: storage type
// T (float, bf16, f16), f32 arithmetic. The reductions (sum, sum_squares) accumulate in f64 in a
// fixed order (per-block partials, then one block over the partials), so they are reproducible
// run to run, and return to the host (they synchronise the stream).
#pragma once
#include <cstdint>

#include "core/half.h"
#include "cuda/device.h"

namespace tessera::cuda {

// y = a + b, where b repeats every nb elements of a (nb == n for same shapes).
template <class T>
void add(const T* a, const T* b, T* y, int64_t n, int64_t nb, cudaStream_t s = current_stream());
template <class T>
void mul(const T* a, const T* b, T* y, int64_t n, int64_t nb, cudaStream_t s = current_stream());
// y = s * x
template <class T>
void scale(const T* x, T* y, float a, int64_t n, cudaStream_t s = current_stream());
// y[j] += sum over rows of x[r, j]  (x [rows, cols], y f32 [cols])
template <class T>
void sum_rows_acc(const T* x, float* y, int64_t rows, int64_t cols,
                  cudaStream_t s = current_stream());

void add_inplace(float* dst, const float* src, int64_t n, cudaStream_t s = current_stream());
void axpy(float* y, const float* x, float a, int64_t n, cudaStream_t s = current_stream());
double sum(const float* x, int64_t n, cudaStream_t s = current_stream());
double sum_squares(const float* x, int64_t n, cudaStream_t s = current_stream());
// The same sum added to *out in device memory (*out += sum); returns without waiting.
void sum_squares_into(const float* x, int64_t n, double* out, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
