#include "kernels/cpu/rope.h"

#include "core/profiler.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {
namespace {

// One head's hs values: pairs (i, i + hs/2) rotated by (cos, sin) = (c[i], sign * s[i]).
template <class T>
void rotate_head(const T* x, T* y, const float* c, const float* s, float sign, int64_t half) {
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const kernels::RopePair r =
        kernels::rope_rotate_pair(to_f32(x[i]), to_f32(x[i + half]), c[i], sign * s[i]);
    y[i] = from_f32<T>(r.first);
    y[i + half] = from_f32<T>(r.second);
  }
}

}  // namespace

template <class T>
void rope_rotate(const kernels::RopeDims& d, const T* x, const float* table, T* y, bool inverse) {
  prof::Scope prof_scope(prof::Family::elementwise, "rope_rotate");
  const int64_t half = kernels::rope_half(d), width = kernels::rope_row_width(d);
  const int64_t rotated = kernels::rope_rotated_heads(d) * d.head_size;
  const int64_t rows = d.batch * d.seq;
  const float sign = inverse ? -1.f : 1.f;
#pragma omp parallel for schedule(static) if (rows * width > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = table + (d.position_offset + r % d.seq) * d.head_size;  // [2, hs/2]
    const T* xr = x + r * width;
    T* yr = y + r * width;
    for (int64_t col = 0; col < rotated; col += d.head_size)
      rotate_head(xr + col, yr + col, c, c + half, sign, half);
    if (xr != yr)
      for (int64_t col = rotated; col < width; ++col) yr[col] = xr[col];  // v heads
  }
}

template void rope_rotate<float>(const kernels::RopeDims&, const float*, const float*, float*,
                                 bool);
template void rope_rotate<bf16>(const kernels::RopeDims&, const bf16*, const float*, bf16*, bool);
template void rope_rotate<f16>(const kernels::RopeDims&, const f16*, const float*, f16*, bool);

}  // namespace tessera::cpu
