#include "kernels/cpu/cast.h"

#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#include <immintrin.h>
#define TS_F16C_AVX512 1
#endif

#include "core/error.h"
#include "core/profiler.h"

namespace tessera::cpu {
namespace {

template <class T>
inline float load(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16> || std::is_same_v<T, float>)
    return to_f32(p[i]);
  else
    return float(p[i]);
}

template <class S, class D>
void cast_typed(const S* s, D* d, int64_t n) {
  if constexpr (std::is_same_v<S, D>) {
    std::memcpy(d, s, size_t(n) * sizeof(S));
  } else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, f16>) {
    f32_to_f16(s, d, n);
  } else if constexpr (std::is_same_v<S, f16> && std::is_same_v<D, float>) {
    f16_to_f32(s, d, n);
  } else if constexpr (std::is_integral_v<S> && std::is_integral_v<D>) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) d[i] = D(s[i]);
  } else if constexpr (std::is_same_v<D, bf16> || std::is_same_v<D, f16>) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) d[i] = from_f32<D>(load(s, i));
  } else {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) d[i] = D(load(s, i));
  }
}

template <class S>
void cast_from(const S* s, void* dst, DType dt, int64_t n) {
  switch (dt) {
    case DType::f32:
      return cast_typed(s, static_cast<float*>(dst), n);
    case DType::bf16:
      return cast_typed(s, static_cast<bf16*>(dst), n);
    case DType::f16:
      return cast_typed(s, static_cast<f16*>(dst), n);
    case DType::i32:
      return cast_typed(s, static_cast<int32_t*>(dst), n);
    case DType::i64:
      return cast_typed(s, static_cast<int64_t*>(dst), n);
    case DType::u16:
      return cast_typed(s, static_cast<uint16_t*>(dst), n);
  }
}

#if TS_F16C_AVX512
// GCC 12 flags the intrinsics' internal _mm512_undefined_*() as maybe uninitialised where they
// inline (a known false positive, as in attention.cpp); off for the F16C code up to its pop.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)  // clang has no -Wmaybe-uninitialized (the fuzz build)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"

constexpr int64_t kLanes = 16;

// F16C's vcvtph2ps is exact like f16_to_float, except that it quiets a signalling NaN (sets
// the f32 quiet bit) where f16_to_float moves the payload over unchanged: NaN lanes are
// rebuilt the scalar way (sign | all-ones exponent | mantissa << 13).
inline void f16_to_f32_16(const f16* s, float* d) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s));
  __m512 f = _mm512_cvtph_ps(h);
  const __m512i w = _mm512_cvtepu16_epi32(h);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(w, _mm512_set1_epi32(0x7fff)),
                                                _mm512_set1_epi32(0x7c00));
  if (nan) {
    const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x8000)), 16);
    const __m512i mant = _mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x3ff)), 13);
    const __m512i bits =
        _mm512_or_si512(_mm512_or_si512(sign, mant), _mm512_set1_epi32(0x7f800000));
    f = _mm512_mask_mov_ps(f, nan, _mm512_castsi512_ps(bits));
  }
  _mm512_storeu_ps(d, f);
}

// vcvtps2ph with round-to-nearest-even matches float_to_f16 on every number (overflow at
// 65520 to inf, f16 subnormals, f32 subnormals to zero, whatever MXCSR's FTZ/DAZ say: all
// checked in tests/test_fp16.cpp), but keeps the top of a NaN's payload where float_to_f16
// writes the canonical quiet NaN 0x7e00 with the input's sign: NaN lanes are replaced by that.
inline void f32_to_f16_16(const float* s, f16* d) {
  const __m512 x = _mm512_loadu_ps(s);
  __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  if (nan) {
    const __m512i sign =
        _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 16), _mm512_set1_epi32(0x8000));
    const __m256i qnan = _mm512_cvtepi32_epi16(_mm512_or_si512(sign, _mm512_set1_epi32(0x7e00)));
    h = _mm256_mask_mov_epi16(h, nan, qnan);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), h);
}
#endif

}  // namespace

void f16_to_f32(const f16* s, float* d, int64_t n) {
  int64_t done = 0;
#if TS_F16C_AVX512
  const int64_t blocks = n / kLanes;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < blocks; ++b) f16_to_f32_16(s + b * kLanes, d + b * kLanes);
  done = blocks * kLanes;
#endif
  for (int64_t i = done; i < n; ++i) d[i] = f16_to_float(s[i]);
}

void f32_to_f16(const float* s, f16* d, int64_t n) {
  int64_t done = 0;
#if TS_F16C_AVX512
  const int64_t blocks = n / kLanes;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < blocks; ++b) f32_to_f16_16(s + b * kLanes, d + b * kLanes);
  done = blocks * kLanes;
#endif
  for (int64_t i = done; i < n; ++i) d[i] = float_to_f16(s[i]);
}
#if TS_F16C_AVX512
#pragma GCC diagnostic pop
#endif

void cast(const void* src, DType st, void* dst, DType dt, int64_t n) {
  prof::Scope prof_scope(prof::Family::cast, "cast");
  switch (st) {
    case DType::f32:
      return cast_from(static_cast<const float*>(src), dst, dt, n);
    case DType::bf16:
      return cast_from(static_cast<const bf16*>(src), dst, dt, n);
    case DType::f16:
      return cast_from(static_cast<const f16*>(src), dst, dt, n);
    case DType::i32:
      return cast_from(static_cast<const int32_t*>(src), dst, dt, n);
    case DType::i64:
      return cast_from(static_cast<const int64_t*>(src), dst, dt, n);
    case DType::u16:
      return cast_from(static_cast<const uint16_t*>(src), dst, dt, n);
  }
}

void fill(void* dst, DType type, double value, int64_t n) {
  prof::Scope prof_scope(prof::Family::cast, "fill");
  if (value == 0.0) return (void)std::memset(dst, 0, size_t(n) * dtype_size(type));
  float v = float(value);
  // Fill the first element, then replicate it bytewise-correctly by type.
  switch (type) {
    case DType::f32: {
      auto* d = static_cast<float*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = v;
      return;
    }
    case DType::bf16: {
      auto* d = static_cast<bf16*>(dst);
      bf16 h = float_to_bf16(v);
      for (int64_t i = 0; i < n; ++i) d[i] = h;
      return;
    }
    case DType::f16: {
      auto* d = static_cast<f16*>(dst);
      f16 h = float_to_f16(v);
      for (int64_t i = 0; i < n; ++i) d[i] = h;
      return;
    }
    case DType::i32: {
      auto* d = static_cast<int32_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = int32_t(value);
      return;
    }
    case DType::i64: {
      auto* d = static_cast<int64_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = int64_t(value);
      return;
    }
    case DType::u16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = uint16_t(value);
      return;
    }
  }
}

}  // namespace tessera::cpu
