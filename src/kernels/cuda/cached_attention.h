// The CUDA twin of cpu/cached_attention.h (same arguments, plus the stream).
#pragma once
#include "cuda/device.h"
#include "kernels/common/cached_attention_dims.h"

namespace tessera::cuda {

// Head sizes up to this (each lane of the warp that serves a query keeps hs / 32 outputs).
constexpr int64_t kCachedAttentionMaxHeadSize = 128;

void cached_attention(const kernels::CachedAttentionDims& d, const float* qkv, float* k_cache,
                      float* v_cache, float* out, cudaStream_t stream = current_stream());

}  // namespace tessera::cuda
