// The shape argument of the cached-attention kernels (cpu/cached_attention.h,
// cuda/cached_attention.h): generation's attention, where T_new new tokens (the prompt, then
// one at a time) attend to every earlier position through a key/value cache instead of the
// prefix being run again.
//   qkv     [B, T_new, (H + 2 Hkv) hs]   this step's projections, laid out (q | k | v) heads
//   k, v    [B, Hkv, capacity, hs]       the cache; positions [0, start) already filled
//   out     [B, T_new, H hs]             new token t (absolute position start + t) attends to
//                                        positions 0 .. start + t, query head h to kv head
//                                        h / (H / Hkv)
#pragma once
#include <cstdint>

#include "core/half.h"  // TS_HD

namespace tessera::kernels {

struct CachedAttentionDims {
  int64_t batch = 0;       // B
  int64_t new_tokens = 0;  // T_new
  int64_t heads = 0;       // H
  int64_t kv_heads = 0;    // Hkv, dividing H
  int64_t head_size = 0;   // hs
  int64_t start = 0;       // positions already in the cache
  int64_t capacity = 0;    // positions the cache holds; start + T_new <= capacity

  TS_HD int64_t qkv_width() const { return (heads + 2 * kv_heads) * head_size; }
};

}  // namespace tessera::kernels
