// Conversions between element types, and fills.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace tessera::cpu {

// dst[i] = (dst_type) src[i] for i < n; any pair of dtypes (float <-> int rounds toward zero).
void cast(const void* src, DType src_type, void* dst, DType dst_type, int64_t n);
void fill(void* dst, DType type, double value, int64_t n);

}  // namespace tessera::cpu
