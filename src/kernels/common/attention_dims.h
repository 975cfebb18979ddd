// The shape argument of the fused causal attention kernels (cpu/attention.h, cuda/attention.h,
// cuda/attention_tc.h): the GPT-2 layout, qkv [B, T, 3C] holding (q | k | v), head h owning
// columns [h*hs, (h+1)*hs) of each third (hs = C / H).
#pragma once
#include <cstdint>

namespace tessera::kernels {

struct AttentionDims {
  int64_t batch = 0;     // B
  int64_t seq = 0;       // T
  int64_t channels = 0;  // C (= heads * head size)
  int64_t heads = 0;     // H
};

}  // namespace tessera::kernels
