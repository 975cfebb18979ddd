// What the rotary position embedding kernels (cpu/rope.h, cuda/rope.h) share: their shape
// argument and the rotation of one pair (TS_HD: the same arithmetic on both backends). A fused
// qkv [B, T, (H + 2 Hkv) * hs] laid out (q heads | k heads | v heads) as attention takes it
// (attention_dims.h); the H + Hkv q and k heads are rotated, the v heads copied. Token t of a
// row sits at position position_offset + t and reads row position_offset + t of the table
// [positions, 2, hs / 2]: cos, then sin, of position * inverse frequency i.
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::kernels {

struct RopeDims {
  int64_t batch = 0;            // B
  int64_t seq = 0;              // T
  int64_t heads = 0;            // H: query heads
  int64_t kv_heads = 0;         // Hkv: key / value heads
  int64_t head_size = 0;        // hs, even
  int64_t position_offset = 0;  // the position of token 0 (a KV cache's length; 0 in training)
};

constexpr int64_t rope_half(const RopeDims& d) {
  return d.head_size / 2;
}
// Heads a qkv row holds, and how many of them (the first) are rotated.
constexpr int64_t rope_row_heads(const RopeDims& d) {
  return d.heads + 2 * d.kv_heads;
}
constexpr int64_t rope_rotated_heads(const RopeDims& d) {
  return d.heads + d.kv_heads;
}
constexpr int64_t rope_row_width(const RopeDims& d) {
  return rope_row_heads(d) * d.head_size;
}

// Hugging Face Llama's rotate_half convention: element i of a head pairs with i + hs/2 (not
// 2i with 2i + 1), so that HF weights load without permuting q and k. (y1, y2) = (x1, x2)
// rotated by the angle whose cos and sin are c and s; the backward passes -s (the inverse).
struct RopePair {
  float first, second;
};
TS_HD inline RopePair rope_rotate_pair(float x1, float x2, float c, float s) {
  return {x1 * c - x2 * s, x2 * c + x1 * s};
}

}  // namespace tessera::kernels
