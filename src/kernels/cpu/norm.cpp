#include "kernels/cpu/norm.h"
#include "core/profiler.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {
namespace {

// Rows are grouped into fixed blocks for the parameter-gradient reduction: each block sums its
// rows into its own partial buffer, then partials are added in block order. The grouping depends
// only on `rows`, never on the thread count, so results are reproducible. At most 256 blocks keep
// the partials small (256 * 2C floats) next to the [rows, C] data.
struct RowBlocks {
  explicit RowBlocks(int64_t rows)
      : rows(rows),
        per_block(std::max<int64_t>(32, (rows + 255) / 256)),
        count((rows + per_block - 1) / per_block) {}
  int64_t begin(int64_t b) const { return b * per_block; }
  int64_t end(int64_t b) const { return std::min(rows, (b + 1) * per_block); }
  int64_t rows, per_block, count;
};

// dst[j] = sum over blocks b (in order) of part[b * stride + j], for j < n.
void sum_partials(const float* part, int64_t blocks, int64_t stride, int64_t n, float* dst) {
#pragma omp parallel for schedule(static) if (blocks * n > kParallelGrain)
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    const int64_t j1 = std::min(n, j0 + 64);
    for (int64_t j = j0; j < j1; ++j) dst[j] = 0.f;
    for (int64_t b = 0; b < blocks; ++b) {
      const float* p = part + b * stride;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) dst[j] += p[j];
    }
  }
}

// Points a null weight (or bias) at a buffer of `value`s, so the row loops have no branches.
const float* or_filled(const float* p, std::vector<float>& storage, int64_t C, float value) {
  if (p) return p;
  storage.assign(size_t(C), value);
  return storage.data();
}

}  // namespace

template <class T, class TY>
void layer_norm_forward(const T* x, const float* w, const float* b, TY* y, float* mean, float* rstd,
                        int64_t rows, int64_t C, float eps) {
  prof::Scope prof_scope(prof::Family::norm, "layer_norm_forward");
  std::vector<float> ones, zeros;
  w = or_filled(w, ones, C, 1.f);
  b = or_filled(b, zeros, C, 0.f);
  const float inv_c = 1.f / float(C);
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    TY* yr = y + r * C;
    // Two passes for the statistics (mean, then squared deviations): the row sits in L1, and
    // this avoids the cancellation of E[x^2] - E[x]^2.
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += to_f32(xr[c]);
    const float m = s * inv_c;
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; ++c) {
      const float d = to_f32(xr[c]) - m;
      v += d * d;
    }
    const float rs = 1.f / std::sqrt(v * inv_c + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = from_f32<TY>((to_f32(xr[c]) - m) * rs * w[c] + b[c]);
    mean[r] = m;
    rstd[r] = rs;
  }
}

template <class T>
void layer_norm_backward(const T* x, const float* w, const float* mean, const float* rstd,
                         const float* gy, T* gx, float* dw, float* db, int64_t rows, int64_t C) {
  prof::Scope prof_scope(prof::Family::norm, "layer_norm_backward");
  std::vector<float> ones;
  w = or_filled(w, ones, C, 1.f);
  const bool params = dw || db;
  const RowBlocks blocks(rows);
  // Per block: [dw partial (C) | db partial (C)].
  std::unique_ptr<float[]> part(params ? new float[size_t(blocks.count * 2 * C)] : nullptr);
  const float inv_c = 1.f / float(C);
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t bl = 0; bl < blocks.count; ++bl) {
    float* pw = params ? part.get() + bl * 2 * C : nullptr;
    float* pb = pw ? pw + C : nullptr;
    if (pw) std::fill(pw, pw + 2 * C, 0.f);
    for (int64_t r = blocks.begin(bl); r < blocks.end(bl); ++r) {
      const T* xr = x + r * C;
      const float* gr = gy + r * C;
      const float m = mean[r], rs = rstd[r];
      if (pw) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float xh = (to_f32(xr[c]) - m) * rs;
          pw[c] += gr[c] * xh;
          pb[c] += gr[c];
        }
      }
      if (!gx) continue;
      // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = gy * w.
      float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (to_f32(xr[c]) - m) * rs;
        const float g = gr[c] * w[c];
        s1 += g;
        s2 += g * xh;
      }
      const float a = s1 * inv_c, bb = s2 * inv_c;
      T* gxr = gx + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (to_f32(xr[c]) - m) * rs;
        gxr[c] = from_f32<T>(rs * (gr[c] * w[c] - a - xh * bb));
      }
    }
  }
  if (dw) sum_partials(part.get(), blocks.count, 2 * C, C, dw);
  if (db) sum_partials(part.get() + C, blocks.count, 2 * C, C, db);
}

template <class T>
void rms_norm_forward(const T* x, const float* w, T* y, float* rstd, int64_t rows, int64_t C,
                      float eps) {
  prof::Scope prof_scope(prof::Family::norm, "rms_norm_forward");
  std::vector<float> ones;
  w = or_filled(w, ones, C, 1.f);
  const float inv_c = 1.f / float(C);
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += to_f32(xr[c]) * to_f32(xr[c]);
    const float rs = 1.f / std::sqrt(ss * inv_c + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = from_f32<T>(to_f32(xr[c]) * rs * w[c]);
    rstd[r] = rs;
  }
}

template <class T>
void rms_norm_backward(const T* x, const float* w, const float* rstd, const float* gy, T* gx,
                       float* dw, int64_t rows, int64_t C) {
  prof::Scope prof_scope(prof::Family::norm, "rms_norm_backward");
  std::vector<float> ones;
  w = or_filled(w, ones, C, 1.f);
  const RowBlocks blocks(rows);
  std::unique_ptr<float[]> part(dw ? new float[size_t(blocks.count * C)] : nullptr);
  const float inv_c = 1.f / float(C);
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t bl = 0; bl < blocks.count; ++bl) {
    float* pw = dw ? part.get() + bl * C : nullptr;
    if (pw) std::fill(pw, pw + C, 0.f);
    for (int64_t r = blocks.begin(bl); r < blocks.end(bl); ++r) {
      const T* xr = x + r * C;
      const float* gr = gy + r * C;
      const float rs = rstd[r];
      if (pw) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pw[c] += gr[c] * to_f32(xr[c]) * rs;
      }
      if (!gx) continue;
      // dx = rstd * (g - xhat * mean(g * xhat)),  g = gy * w, xhat = x * rstd.
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += gr[c] * w[c] * to_f32(xr[c]) * rs;
      const float k = s * inv_c;
      T* gxr = gx + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c)
        gxr[c] = from_f32<T>(rs * (gr[c] * w[c] - to_f32(xr[c]) * rs * k));
    }
  }
  if (dw) sum_partials(part.get(), blocks.count, C, C, dw);
}

#define TS_INSTANTIATE(T)                                                                         \
  template void layer_norm_forward<T>(const T*, const float*, const float*, T*, float*, float*,   \
                                      int64_t, int64_t, float);                                   \
  template void layer_norm_backward<T>(const T*, const float*, const float*, const float*,        \
                                       const float*, T*, float*, float*, int64_t, int64_t);       \
  template void rms_norm_forward<T>(const T*, const float*, T*, float*, int64_t, int64_t, float); \
  template void rms_norm_backward<T>(const T*, const float*, const float*, const float*, T*,      \
                                     float*, int64_t, int64_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE
template void layer_norm_forward<float, bf16>(const float*, const float*, const float*, bf16*,
                                              float*, float*, int64_t, int64_t, float);
template void layer_norm_forward<float, f16>(const float*, const float*, const float*, f16*, float*,
                                             float*, int64_t, int64_t, float);

}  // namespace tessera::cpu
