#include "kernels/cpu/activation.h"
#include "core/profiler.h"

#include "kernels/cpu/activation_math.h"
#include "kernels/cpu/elementwise.h"

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
void activation_forward(Activation act, const T* x, T* y, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "activation_forward");
  switch (act) {
    case Activation::gelu:
      return map(x, y, n, [](float v) { return math::gelu_tanh(v); });
    case Activation::silu:
      return map(x, y, n, [](float v) { return math::silu(v); });
    case Activation::relu:
      return map(x, y, n, [](float v) { return math::relu(v); });
  }
}

template <class T>
void activation_backward(Activation act, const T* x, const float* gy, T* gx, int64_t n) {
  prof::Scope prof_scope(prof::Family::elementwise, "activation_backward");
  switch (act) {
    case Activation::gelu:
      return map_grad(x, gy, gx, n, [](float v) { return math::gelu_tanh_grad(v); });
    case Activation::silu:
      return map_grad(x, gy, gx, n, [](float v) { return math::silu_grad(v); });
    case Activation::relu:
      return map_grad(x, gy, gx, n, [](float v) { return math::relu_grad(v); });
  }
}

#define TS_INSTANTIATE(T)                                                 \
  template void activation_forward<T>(Activation, const T*, T*, int64_t); \
  template void activation_backward<T>(Activation, const T*, const float*, T*, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cpu
