// Conversions between element types, and fills.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "core/half.h"

namespace tessera::cpu {

// dst[i] = (dst_type) src[i] for i < n; any pair of dtypes (float <-> int rounds toward zero).
void cast(const void* src, DType src_type, void* dst, DType dst_type, int64_t n);
void fill(void* dst, DType type, double value, int64_t n);

// n contiguous values between f16 and f32, bit for bit core/half.h's f16_to_float and
// float_to_f16 (round to nearest even, overflow to inf, subnormals, NaNs included: see
// tests/test_fp16.cpp's exhaustive sweeps). With AVX-512 they run on F16C, 16 lanes at a
// time; elsewhere they are those scalar functions. Large buffers are split across threads.
void f16_to_f32(const f16* src, float* dst, int64_t n);
void f32_to_f16(const float* src, f16* dst, int64_t n);

}  // namespace tessera::cpu
