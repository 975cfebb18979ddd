#include "kernels/cpu/softmax.h"
#include "core/profiler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/common/activation_math.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {
namespace {

template <class T>
float row_max(const T* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < n; ++c) m = std::max(m, to_f32(x[c]));
  return m;
}

// e[c] = exp(x[c] - m); returns the sum.
template <class T>
float exp_shifted(const T* x, float m, float* e, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < n; ++c) {
    e[c] = math::exp_f32(to_f32(x[c]) - m);
    s += e[c];
  }
  return s;
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t C) {
  prof::Scope prof_scope(prof::Family::elementwise, "softmax_forward");
#pragma omp parallel if (rows * C > kParallelGrain)
  {
    // Low-precision outputs keep the unnormalised exps in an f32 row, not rounded twice.
    std::vector<float> scratch(std::is_same_v<T, float> ? 0 : size_t(C));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * C;
      T* yr = y + r * C;
      float* e;
      if constexpr (std::is_same_v<T, float>)
        e = yr;
      else
        e = scratch.data();
      const float inv = 1.f / exp_shifted(xr, row_max(xr, C), e, C);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = from_f32<T>(e[c] * inv);
    }
  }
}

template <class T>
void softmax_backward(const T* y, const float* gy, T* gx, int64_t rows, int64_t C) {
  prof::Scope prof_scope(prof::Family::elementwise, "softmax_backward");
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * C;
    const float* gr = gy + r * C;
    T* gxr = gx + r * C;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < C; ++c) dot += gr[c] * to_f32(yr[c]);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) gxr[c] = from_f32<T>(to_f32(yr[c]) * (gr[c] - dot));
  }
}

kernels::CrossEntropySum cross_entropy_forward(const float* logits, const int32_t* targets,
                                               float* lse, int64_t rows, int64_t V,
                                               int32_t ignore_index) {
  prof::Scope prof_scope(prof::Family::embed_loss, "cross_entropy_forward");
  std::vector<float> row_loss(size_t(rows), 0.f);
#pragma omp parallel for schedule(static) if (rows * V > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    lse[r] = 0.f;
    const int32_t t = targets[r];
    if (t == ignore_index) continue;
    const float* xr = logits + r * V;
    const float m = row_max(xr, V);
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < V; ++c) s += math::exp_f32(xr[c] - m);
    lse[r] = m + std::log(s);
    row_loss[size_t(r)] = lse[r] - xr[t];
  }
  kernels::CrossEntropySum out;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index) continue;
    out.loss += double(row_loss[size_t(r)]);
    ++out.count;
  }
  return out;
}

template <class TG>
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                            float scale, TG* gx, int64_t rows, int64_t V, int32_t ignore_index) {
  prof::Scope prof_scope(prof::Family::embed_loss, "cross_entropy_backward");
#pragma omp parallel for schedule(static) if (rows * V > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    TG* gr = gx + r * V;
    const int32_t t = targets[r];
    if (t == ignore_index) {
#pragma omp simd
      for (int64_t c = 0; c < V; ++c) gr[c] = from_f32<TG>(0.f);
      continue;
    }
    const float* xr = logits + r * V;
    const float l = lse[r];
    // The target's entry is p - 1, formed in f32 before the (possible) rounding to bf16.
    const float pt = scale * math::exp_f32(xr[t] - l) - scale;
#pragma omp simd
    for (int64_t c = 0; c < V; ++c) gr[c] = from_f32<TG>(scale * math::exp_f32(xr[c] - l));
    gr[t] = from_f32<TG>(pt);
  }
}

template void cross_entropy_backward<float>(const float*, const int32_t*, const float*, float,
                                            float*, int64_t, int64_t, int32_t);
template void cross_entropy_backward<bf16>(const float*, const int32_t*, const float*, float, bf16*,
                                           int64_t, int64_t, int32_t);

#define TS_INSTANTIATE(T)                                           \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t); \
  template void softmax_backward<T>(const T*, const float*, T*, int64_t, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cpu
