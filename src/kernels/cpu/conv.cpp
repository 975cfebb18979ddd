// Convolution as im2col + one oneDNN GEMM per image, and max pooling with saved argmax.
//
// Per image rather than one GEMM over the whole batch: the im2col buffer of one image
// ([Cin*kh*kw, Ho*Wo], ~1 MB for a 32-channel 3x3 layer on 28x28) stays cache-sized, while the
// batch's would be N times that; the GEMM's n = Ho*Wo is already wide enough for oneDNN. The
// GEMMs parallelise internally, im2col / col2im over rows / channels with OpenMP.
#include "kernels/cpu/conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"

namespace tessera::cpu {

namespace {

// Output columns ow whose input column ow*stride - pad + kj lies inside [0, W): [lo, hi).
struct ColRange {
  int64_t lo, hi;
};
ColRange valid_columns(const kernels::Conv2dDims& d, int64_t kj) {
  const int64_t first = d.pad - kj;           // ow*stride >= first
  const int64_t last = d.w - 1 + d.pad - kj;  // ow*stride <= last
  ColRange r;
  r.lo = first <= 0 ? 0 : (first + d.stride - 1) / d.stride;
  r.hi = last < 0 ? 0 : std::min(d.wo, last / d.stride + 1);
  r.hi = std::max(r.hi, r.lo);
  return r;
}

}  // namespace

template <class T>
void im2col(const kernels::Conv2dDims& d, const float* x, T* col) {
  const int64_t rows = d.patch(), P = d.pixels();
#pragma omp parallel for schedule(static) if (rows * P > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (d.kh * d.kw), ki = r / d.kw % d.kh, kj = r % d.kw;
    const ColRange cr = valid_columns(d, kj);
    const float* plane = x + c * d.h * d.w;
    for (int64_t oh = 0; oh < d.ho; ++oh) {
      T* out = col + r * P + oh * d.wo;
      const int64_t ih = oh * d.stride - d.pad + ki;
      if (ih < 0 || ih >= d.h) {
        for (int64_t ow = 0; ow < d.wo; ++ow) out[ow] = from_f32<T>(0.f);
        continue;
      }
      const float* in = plane + ih * d.w - d.pad + kj;  // in[ow * stride] for valid ow
      for (int64_t ow = 0; ow < cr.lo; ++ow) out[ow] = from_f32<T>(0.f);
      for (int64_t ow = cr.lo; ow < cr.hi; ++ow) out[ow] = from_f32<T>(in[ow * d.stride]);
      for (int64_t ow = cr.hi; ow < d.wo; ++ow) out[ow] = from_f32<T>(0.f);
    }
  }
}

void col2im_add(const kernels::Conv2dDims& d, const float* col, float* dx) {
  const int64_t P = d.pixels(), taps = d.kh * d.kw;
  // One channel per iteration: all of a channel's rows land in its own plane, so no races.
#pragma omp parallel for schedule(static) if (d.patch() * P > kParallelGrain)
  for (int64_t c = 0; c < d.cin; ++c) {
    float* plane = dx + c * d.h * d.w;
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t ki = t / d.kw, kj = t % d.kw;
      const ColRange cr = valid_columns(d, kj);
      const float* src = col + (c * taps + t) * P;
      for (int64_t oh = 0; oh < d.ho; ++oh) {
        const int64_t ih = oh * d.stride - d.pad + ki;
        if (ih < 0 || ih >= d.h) continue;
        float* out = plane + ih * d.w - d.pad + kj;
        const float* in = src + oh * d.wo;
        for (int64_t ow = cr.lo; ow < cr.hi; ++ow) out[ow * d.stride] += in[ow];
      }
    }
  }
}

namespace {

// The GEMM operand copy of an f32 buffer (a no-op view for f32).
template <class T>
const T* as_operand(const float* src, int64_t n, std::vector<T>& storage) {
  if constexpr (std::is_same_v<T, float>) {
    (void)n, (void)storage;
    return src;
  } else {
    storage.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) storage[size_t(i)] = from_f32<T>(src[i]);
    return storage.data();
  }
}

template <class T>
void forward_impl(const kernels::Conv2dDims& d, const float* x, const float* w, const float* b,
                  float* y, DType compute) {
  const int64_t K = d.patch(), P = d.pixels();
  std::vector<T> w_store, col(size_t(K * P));
  const T* wt = as_operand<T>(w, d.cout * K, w_store);
  for (int64_t i = 0; i < d.n; ++i) {
    im2col<T>(d, x + i * d.cin * d.h * d.w, col.data());
    float* yi = y + i * d.cout * P;
    GemmArgs g;  // y_i [Cout, P] = W [Cout, K] · col [K, P]
    g.m = d.cout, g.n = P, g.k = K, g.ab_type = compute;
    g.a = wt, g.b = col.data(), g.c = yi;
    gemm(g);
    if (b) {
      for (int64_t o = 0; o < d.cout; ++o) {
        float* row = yi + o * P;
        const float bo = b[o];
        for (int64_t p = 0; p < P; ++p) row[p] += bo;
      }
    }
  }
}

template <class T>
void backward_impl(const kernels::Conv2dDims& d, const float* x, const float* w, const float* dy,
                   float* dx, float* dw, float* db, DType compute) {
  const int64_t K = d.patch(), P = d.pixels(), in_size = d.cin * d.h * d.w;
  std::vector<T> w_store, dy_store, col;
  std::vector<float> dcol;
  const T* wt = dx ? as_operand<T>(w, d.cout * K, w_store) : nullptr;
  if (dw) col.resize(size_t(K * P));
  if (dx) {
    dcol.resize(size_t(K * P));
    std::memset(dx, 0, size_t(d.n * in_size) * sizeof(float));
  }
  if (db) std::fill(db, db + d.cout, 0.f);
  if (dw && d.n == 0) std::fill(dw, dw + d.cout * K, 0.f);
  for (int64_t i = 0; i < d.n; ++i) {
    const float* dyi = dy + i * d.cout * P;
    const T* dyt = as_operand<T>(dyi, d.cout * P, dy_store);
    if (dw) {  // dW [Cout, K] (+)= dy_i [Cout, P] · col_i^T, col_i recomputed rather than kept
      im2col<T>(d, x + i * in_size, col.data());
      GemmArgs g;
      g.m = d.cout, g.n = K, g.k = P, g.ab_type = compute, g.trans_b = true;
      g.a = dyt, g.b = col.data(), g.c = dw, g.accumulate = i > 0;
      gemm(g);
    }
    if (dx) {  // dcol [K, P] = W^T · dy_i, scattered back onto dx_i
      GemmArgs g;
      g.m = K, g.n = P, g.k = d.cout, g.ab_type = compute, g.trans_a = true;
      g.a = wt, g.b = dyt, g.c = dcol.data();
      gemm(g);
      col2im_add(d, dcol.data(), dx + i * in_size);
    }
    if (db) {
      for (int64_t o = 0; o < d.cout; ++o) {
        const float* row = dyi + o * P;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t p = 0; p < P; ++p) s += row[p];
        db[o] += s;
      }
    }
  }
}

}  // namespace

void conv2d_forward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* b,
                    float* y, DType compute) {
  TS_CHECK(compute == DType::f32 || compute == DType::bf16,
           "conv2d: GEMM compute dtype {} unsupported on cpu (expected f32 or bf16)",
           dtype_name(compute));
  if (compute == DType::bf16)
    forward_impl<bf16>(d, x, w, b, y, compute);
  else
    forward_impl<float>(d, x, w, b, y, compute);
}

void conv2d_backward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, DType compute) {
  TS_CHECK(compute == DType::f32 || compute == DType::bf16,
           "conv2d: GEMM compute dtype {} unsupported on cpu (expected f32 or bf16)",
           dtype_name(compute));
  if (compute == DType::bf16)
    backward_impl<bf16>(d, x, w, dy, dx, dw, db, compute);
  else
    backward_impl<float>(d, x, w, dy, dx, dw, db, compute);
}

template <class T>
void max_pool2d_forward(const kernels::Pool2dDims& d, const T* x, T* y, int32_t* argmax) {
  const int64_t planes = d.n * d.c, in_plane = d.h * d.w, out_plane = d.ho * d.wo;
  // Where each output's window starts within a plane (the same for every plane). The loops below
  // run across all of a plane's outputs, so they vectorise even when Wo is narrower than a
  // vector, and pick maxima with selects: a compare-and-branch mispredicts half the time on
  // real activations, and a scalar select chain is latency-bound.
  std::vector<int32_t> start(static_cast<size_t>(out_plane));
  for (int64_t oh = 0; oh < d.ho; ++oh)
    for (int64_t ow = 0; ow < d.wo; ++ow)
      start[size_t(oh * d.wo + ow)] = int32_t(oh * d.stride * d.w + ow * d.stride);
  const int32_t* st = start.data();
#pragma omp parallel if (planes * out_plane * d.kernel * d.kernel > kParallelGrain)
  {
    std::vector<float> best_v(static_cast<size_t>(out_plane));
    std::vector<int32_t> best_i(static_cast<size_t>(out_plane));
    float* bv = best_v.data();
    int32_t* bi = best_i.data();
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T* xp = x + pl * in_plane;
      for (int64_t o = 0; o < out_plane; ++o) bv[o] = to_f32(xp[st[o]]), bi[o] = st[o];
      for (int64_t ki = 0; ki < d.kernel; ++ki)
        for (int64_t kj = 0; kj < d.kernel; ++kj) {
          const int32_t delta = int32_t(ki * d.w + kj);
#pragma omp simd
          for (int64_t o = 0; o < out_plane; ++o) {
            const int32_t idx = st[o] + delta;
            const float v = to_f32(xp[idx]);
            // Larger wins, the first of equals stays, a NaN (v != v) beats numbers.
            const bool take = v > bv[o] || (v != v && bv[o] == bv[o]);
            bv[o] = take ? v : bv[o];
            bi[o] = take ? idx : bi[o];
          }
        }
      T* yp = y + pl * out_plane;
      for (int64_t o = 0; o < out_plane; ++o) yp[o] = xp[bi[o]];
      if (argmax) std::memcpy(argmax + pl * out_plane, bi, size_t(out_plane) * sizeof(int32_t));
    }
  }
}

void max_pool2d_backward(const kernels::Pool2dDims& d, const float* dy, const int32_t* argmax,
                         float* dx) {
  const int64_t planes = d.n * d.c, in_plane = d.h * d.w, out_plane = d.ho * d.wo;
#pragma omp parallel for schedule(static) if (planes * (in_plane + out_plane) > kParallelGrain)
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* dxp = dx + pl * in_plane;
    std::fill(dxp, dxp + in_plane, 0.f);
    for (int64_t o = pl * out_plane; o < (pl + 1) * out_plane; ++o) dxp[argmax[o]] += dy[o];
  }
}

template void im2col<float>(const kernels::Conv2dDims&, const float*, float*);
template void im2col<bf16>(const kernels::Conv2dDims&, const float*, bf16*);
template void max_pool2d_forward<float>(const kernels::Pool2dDims&, const float*, float*, int32_t*);
template void max_pool2d_forward<bf16>(const kernels::Pool2dDims&, const bf16*, bf16*, int32_t*);
template void max_pool2d_forward<f16>(const kernels::Pool2dDims&, const f16*, f16*, int32_t*);

}  // namespace tessera::cpu
