// bf16 and f16 storage types and their conversions to and from f32.
// The conversions are plain bit manipulation so that the same code serves the CPU kernels
// and (marked host/device) the CUDA kernels; f32 -> bf16 rounds to nearest even.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TS_HD __host__ __device__
#else
#define TS_HD
#endif

namespace tessera {

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

TS_HD inline float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
TS_HD inline uint32_t float_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

TS_HD inline float bf16_to_float(bf16 h) {
  return bits_to_float(uint32_t(h.bits) << 16);
}

TS_HD inline bf16 float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{uint16_t(u >> 16)};
}

TS_HD inline float f16_to_float(f16 h) {
  uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // subnormal: value = mant * 2^-24
    float v = float(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

TS_HD inline f16 float_to_f16(float f) {
  uint32_t u = float_to_bits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u)};   // NaN
  if (a >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // overflow -> inf
  if (a < 0x38800000u) {                                       // subnormal or zero in f16
    float v = bits_to_float(a) * 16777216.0f;                  // scale by 2^24
    uint32_t m = uint32_t(v);
    float rem = v - float(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return f16{uint16_t(sign | m)};
  }
  uint32_t exp = (a >> 23) - 112u;
  uint32_t mant = a & 0x7fffffu;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into exponent: correct
  return f16{uint16_t(sign | h)};
}

// Uniform load/store so kernels can be written once for every float type.
TS_HD inline float to_f32(float x) {
  return x;
}
TS_HD inline float to_f32(bf16 x) {
  return bf16_to_float(x);
}
TS_HD inline float to_f32(f16 x) {
  return f16_to_float(x);
}

template <class T>
TS_HD inline T from_f32(float x);
template <>
TS_HD inline float from_f32<float>(float x) {
  return x;
}
template <>
TS_HD inline bf16 from_f32<bf16>(float x) {
  return float_to_bf16(x);
}
template <>
TS_HD inline f16 from_f32<f16>(float x) {
  return float_to_f16(x);
}

}  // namespace tessera
