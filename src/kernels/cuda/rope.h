// Rotary position embeddings (Llama) on a fused qkv on the device: cpu/rope.h's twin, argument
// for argument, plus a trailing stream. Storage float, bf16 or f16; f32 arithmetic, the pair
// rotation being kernels/common/rope.h's (TS_HD) on both backends.
#pragma once
#include <cstdint>

#include "cuda/device.h"
#include "kernels/common/rope.h"

namespace tessera::cuda {

template <class T>
void rope_rotate(const kernels::RopeDims& d, const T* x, const float* table, T* y, bool inverse,
                 cudaStream_t s = current_stream());

}  // namespace tessera::cuda
