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

// What the CUDA attention kernels take (ops/attention.cpp checks it before choosing one): the
// CUDA-core kernels any head size up to this, the tensor-core ones (16-bit) these head sizes.
constexpr int64_t kCudaAttentionMaxHeadSize = 128;
constexpr bool cuda_attention_tc_supports(int64_t head_size) {
  return head_size == 64 || head_size == 128;
}

}  // namespace tessera::kernels
