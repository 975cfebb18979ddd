#include "kernels/cpu/cast.h"

#include <cstring>

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
    case DType::f32: return cast_typed(s, static_cast<float*>(dst), n);
    case DType::bf16: return cast_typed(s, static_cast<bf16*>(dst), n);
    case DType::f16: return cast_typed(s, static_cast<f16*>(dst), n);
    case DType::i32: return cast_typed(s, static_cast<int32_t*>(dst), n);
    case DType::i64: return cast_typed(s, static_cast<int64_t*>(dst), n);
    case DType::u16: return cast_typed(s, static_cast<uint16_t*>(dst), n);
  }
}

}  // namespace

void cast(const void* src, DType st, void* dst, DType dt, int64_t n) {
  prof::Scope prof_scope(prof::Family::cast, "cast");
  switch (st) {
    case DType::f32: return cast_from(static_cast<const float*>(src), dst, dt, n);
    case DType::bf16: return cast_from(static_cast<const bf16*>(src), dst, dt, n);
    case DType::f16: return cast_from(static_cast<const f16*>(src), dst, dt, n);
    case DType::i32: return cast_from(static_cast<const int32_t*>(src), dst, dt, n);
    case DType::i64: return cast_from(static_cast<const int64_t*>(src), dst, dt, n);
    case DType::u16: return cast_from(static_cast<const uint16_t*>(src), dst, dt, n);
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
