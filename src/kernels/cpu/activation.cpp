#include "kernels/cpu/activation.h"

#include "core/profiler.h"
#include "kernels/common/activation_math.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/reduce.h"

namespace tessera::cpu {
namespace {

// One loop per activation (the switch sits outside), so each inlines into a vector loop.
template <class T, class F>
void map(const T* x, T* y, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = from_f32<T>(f(to_f32(x[i])));
}

template <class T, class F>
void map_grad(const T* x, const float* gy, T* gx, int64_t n, F df) {
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) gx[i] = from_f32<T>(gy[i] * df(to_f32(x[i])));
}

}  // namespace

template <class T>
void activation_forward(kernels::Activation act, const T* x, T* y, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "activation_forward");
  switch (act) {
    case kernels::Activation::gelu:
      return map(x, y, n, [](float v) { return math::gelu_tanh(v); });
    case kernels::Activation::silu:
      return map(x, y, n, [](float v) { return math::silu(v); });
    case kernels::Activation::relu:
      return map(x, y, n, [](float v) { return math::relu(v); });
  }
}

template <class T>
void activation_backward(kernels::Activation act, const T* x, const float* gy, T* gx, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "activation_backward");
  switch (act) {
    case kernels::Activation::gelu:
      return map_grad(x, gy, gx, n, [](float v) { return math::gelu_tanh_grad(v); });
    case kernels::Activation::silu:
      return map_grad(x, gy, gx, n, [](float v) { return math::silu_grad(v); });
    case kernels::Activation::relu:
      return map_grad(x, gy, gx, n, [](float v) { return math::relu_grad(v); });
  }
}

template <class TO>
void gelu_forward_to(const float* h, TO* y, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "gelu_forward_to");
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = from_f32<TO>(math::gelu_tanh(h[i]));
}

template <class TG>
void gelu_backward_bias(const float* h, const float* gy, TG* gh, float* db, int64_t rows,
                        int64_t cols) {
  prof::Scope prof_scope(prof::Family::elementwise, "gelu_backward_bias");
  blocked_column_sums(rows, cols, db, [&](int64_t r, float* p) {
    const float* hr = h + r * cols;
    const float* gr = gy + r * cols;
    TG* out = gh + r * cols;
    if (p) {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) {
        const float v = gr[c] * math::gelu_tanh_grad(hr[c]);
        out[c] = from_f32<TG>(v);
        p[c] += v;
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) out[c] = from_f32<TG>(gr[c] * math::gelu_tanh_grad(hr[c]));
    }
  });
}

template void gelu_forward_to<float>(const float*, float*, int64_t);
template void gelu_forward_to<bf16>(const float*, bf16*, int64_t);
template void gelu_backward_bias<float>(const float*, const float*, float*, float*, int64_t,
                                        int64_t);
template void gelu_backward_bias<bf16>(const float*, const float*, bf16*, float*, int64_t, int64_t);

#define TS_INSTANTIATE(T)                                                          \
  template void activation_forward<T>(kernels::Activation, const T*, T*, int64_t); \
  template void activation_backward<T>(kernels::Activation, const T*, const float*, T*, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cpu
