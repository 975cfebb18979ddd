// Generation's attention through a key/value cache (kernels/common/cached_attention_dims.h):
// appends the new tokens' keys and values to the cache, then attends. f32; no backward
// (generation runs without gradients).
#pragma once
#include "kernels/common/cached_attention_dims.h"

namespace tessera::cpu {

void cached_attention(const kernels::CachedAttentionDims& d, const float* qkv, float* k_cache,
                      float* v_cache, float* out);

}  // namespace tessera::cpu
