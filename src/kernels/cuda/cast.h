// Conversions between element types, and fills, on device buffers (cpu/cast.h semantics:
// float -> int rounds toward zero, f32 -> bf16 / f16 rounds to nearest even).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device.h"

namespace tessera::cuda {

void cast(const void* src, DType src_type, void* dst, DType dst_type, int64_t n,
          cudaStream_t s = current_stream());
void fill(void* dst, DType type, double value, int64_t n, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
