#include "kernels/cpu/elementwise.h"

#include "core/profiler.h"

namespace tessera::cpu {

template <class T>
void add(const T* a, const T* b, T* y, int64_t n, int64_t nb) {
  prof::Scope prof_scope(prof::Family::elementwise, "add");
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i % nb]));
}

template <class T>
void mul(const T* a, const T* b, T* y, int64_t n, int64_t nb) {
  prof::Scope prof_scope(prof::Family::elementwise, "mul");
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = from_f32<T>(to_f32(a[i]) * to_f32(b[i % nb]));
}

template <class T>
void scale(const T* x, T* y, float s, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "scale");
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = from_f32<T>(s * to_f32(x[i]));
}

template <class T>
void sum_rows_acc(const T* x, float* y, int64_t rows, int64_t cols) {
  prof::Scope prof_scope(prof::Family::elementwise, "sum_rows_acc");
  // Columns split across threads; each thread walks all rows of its columns (no reduction race).
#pragma omp parallel for schedule(static) if (rows * cols > kParallelGrain)
  for (int64_t c0 = 0; c0 < cols; c0 += 64) {
    int64_t c1 = c0 + 64 < cols ? c0 + 64 : cols;
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) y[c] += to_f32(xr[c]);
    }
  }
}

#define TS_INSTANTIATE(T)                                           \
  template void add<T>(const T*, const T*, T*, int64_t, int64_t);   \
  template void mul<T>(const T*, const T*, T*, int64_t, int64_t);   \
  template void scale<T>(const T*, T*, float, int64_t);             \
  template void sum_rows_acc<T>(const T*, float*, int64_t, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

void add_inplace(float* dst, const float* src, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "add_inplace");
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void axpy(float* y, const float* x, float a, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "axpy");
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

double sum(const float* x, int64_t n) {
  double s = 0;
#pragma omp parallel for simd reduction(+ : s) schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) s += double(x[i]);
  return s;
}

double sum_squares(const float* x, int64_t n) {
  double s = 0;
#pragma omp parallel for simd reduction(+ : s) schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}

}  // namespace tessera::cpu
