#include "kernels/cpu/swiglu.h"

#include "core/profiler.h"
#include "kernels/common/activation_math.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {

template <class TI, class TO>
void swiglu_forward(const TI* x, TO* y, int64_t rows, int64_t F) {
  prof::Scope prof_scope(prof::Family::elementwise, "swiglu_forward");
#pragma omp parallel for schedule(static) if (rows * F > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const TI* gate = x + r * 2 * F;
    const TI* up = gate + F;
    TO* out = y + r * F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j)
      out[j] = from_f32<TO>(math::silu(to_f32(gate[j])) * to_f32(up[j]));
  }
}

template <class T>
void swiglu_backward(const T* x, const float* gy, T* gx, int64_t rows, int64_t F) {
  prof::Scope prof_scope(prof::Family::elementwise, "swiglu_backward");
#pragma omp parallel for schedule(static) if (rows * F > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = x + r * 2 * F;
    const T* up = gate + F;
    const float* g = gy + r * F;
    T* dgate = gx + r * 2 * F;
    T* dup = dgate + F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const float a = to_f32(gate[j]);
      dgate[j] = from_f32<T>(g[j] * to_f32(up[j]) * math::silu_grad(a));
      dup[j] = from_f32<T>(g[j] * math::silu(a));
    }
  }
}

#define TS_INSTANTIATE_FORWARD(TI, TO) \
  template void swiglu_forward<TI, TO>(const TI*, TO*, int64_t, int64_t);
#define TS_INSTANTIATE(T)          \
  TS_INSTANTIATE_FORWARD(T, float) \
  TS_INSTANTIATE_FORWARD(T, bf16)  \
  TS_INSTANTIATE_FORWARD(T, f16)   \
  template void swiglu_backward<T>(const T*, const float*, T*, int64_t, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE
#undef TS_INSTANTIATE_FORWARD

}  // namespace tessera::cpu
