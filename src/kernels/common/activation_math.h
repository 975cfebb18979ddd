// Per-element math of the activations and the softmax family: f32 in, f32 out, no libm calls,
// branch-free, so that `#pragma omp simd` loops vectorise them (glibc's expf/tanhf do not
// vectorise without -ffast-math), and TS_HD, so that the CPU kernels, the CUDA kernels and the
// emulated cuBLASLt epilogue compute the same function. Namespace tessera::math (not
// tessera::kernels): plain math, with no tie to a backend or a kernel's arguments.
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::math {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// exp(x) to ~1 ulp: exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln 2 / 2, with exp(r)
// from Cephes' degree-6 polynomial. Inputs above 88.376 give +inf (true exp overflows at
// 88.723), below -87.337 give 0 (we skip subnormal results), NaN stays NaN.
TS_HD inline float exp_f32(float x) {
  constexpr float kHi = 88.3762626647949f, kLo = -87.3365478515625f;
  float xc = x > kLo ? x : kLo;  // also maps NaN to kLo so the integer conversion stays defined
  xc = xc < kHi ? xc : kHi;
  // Round x / ln 2 to an integer by adding 1.5 * 2^23: the sum's low mantissa bits hold n.
  constexpr float kRound = 12582912.f;
  const float t = xc * 1.44269504088896341f + kRound;
  const int32_t n = int32_t(float_to_bits(t) - float_to_bits(kRound));
  const float nf = t - kRound;
  float r = xc - nf * 0.693359375f;  // ln 2 split in two for an exact first product
  r = r + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  float y = p * bits_to_float(uint32_t(n + 127) << 23);
  y = x > kHi ? bits_to_float(0x7f800000u) : y;
  y = x < kLo ? 0.f : y;
  return x != x ? x : y;
}

TS_HD inline float sigmoid(float x) {
  return 1.f / (1.f + exp_f32(-x));
}

// GPT-2's GELU: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Since
// 0.5 (1 + tanh(u)) = sigmoid(2u), this is x * sigmoid(2u): one exp, no cancellation.
TS_HD inline float gelu_tanh(float x) {
  const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
  return x * sigmoid(2.f * u);
}

// d/dx [x s(2u)] = s + 2 x s (1 - s) u',  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
TS_HD inline float gelu_tanh_grad(float x) {
  const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
  const float du = kSqrt2OverPi * (1.f + 3.f * kGeluCubic * x * x);
  const float s = sigmoid(2.f * u);
  return s + 2.f * x * s * (1.f - s) * du;
}

// SiLU (swish): x * sigmoid(x); derivative s (1 + x (1 - s)).
TS_HD inline float silu(float x) {
  return x * sigmoid(x);
}
TS_HD inline float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.f + x * (1.f - s));
}

// ReLU that lets NaN through (a diverging run should show NaN, not silently 0).
TS_HD inline float relu(float x) {
  return x < 0.f ? 0.f : x;
}
// Derivative 1 for x > 0, else 0 (0 at the kink, as PyTorch).
TS_HD inline float relu_grad(float x) {
  return x > 0.f ? 1.f : 0.f;
}

}  // namespace tessera::math
