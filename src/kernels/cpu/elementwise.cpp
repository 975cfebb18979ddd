#include "kernels/cpu/elementwise.h"

#include "core/profiler.h"
#include "kernels/cpu/reduce.h"

namespace tessera::cpu {

namespace {

// y = op(a, b) where b repeats every nb elements of a. The same-shape case is a flat loop; the
// broadcast case walks rows of nb, so no element pays for an index modulo (an integer division
// that kept the loop at a third of memory speed).
template <class T, class Op>
void binary_op(const T* a, const T* b, T* y, int64_t n, int64_t nb, Op op) {
  if (nb == n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) y[i] = from_f32<T>(op(to_f32(a[i]), to_f32(b[i])));
    return;
  }
  const int64_t rows = n / nb;
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = a + r * nb;
    T* yr = y + r * nb;
#pragma omp simd
    for (int64_t j = 0; j < nb; ++j) yr[j] = from_f32<T>(op(to_f32(ar[j]), to_f32(b[j])));
  }
}

}  // namespace

template <class T>
void add(const T* a, const T* b, T* y, int64_t n, int64_t nb) {
  prof::Scope prof_scope(prof::Family::elementwise, "add");
  binary_op(a, b, y, n, nb, [](float u, float v) { return u + v; });
}

template <class T>
void mul(const T* a, const T* b, T* y, int64_t n, int64_t nb) {
  prof::Scope prof_scope(prof::Family::elementwise, "mul");
  binary_op(a, b, y, n, nb, [](float u, float v) { return u * v; });
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
  blocked_column_sums(rows, cols, y, [&](int64_t r, float* p) {
    const T* xr = x + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) p[c] += to_f32(xr[c]);
  });
}

void cast_sum_rows_acc(const float* x, bf16* out, float* y, int64_t rows, int64_t cols) {
  prof::Scope prof_scope(prof::Family::cast, "cast_sum_rows_acc");
  blocked_column_sums(rows, cols, y, [&](int64_t r, float* p) {
    const float* xr = x + r * cols;
    bf16* o = out + r * cols;
    if (p) {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) {
        o[c] = float_to_bf16(xr[c]);
        p[c] += xr[c];
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) o[c] = float_to_bf16(xr[c]);
    }
  });
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
