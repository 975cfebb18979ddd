// Rotary position embeddings (Llama) on a fused qkv: kernels/common/rope.h for the layout and
// the table. Templated over the storage type (float, bf16, f16) with f32 arithmetic.
#pragma once
#include <cstdint>

#include "core/half.h"
#include "kernels/common/rope.h"

namespace tessera::cpu {

// y = x with its q and k heads rotated by their positions' angles (inverse: by minus them, the
// backward) and its v heads copied. x, y [B, T, (H + 2 Hkv) hs]; table f32 [positions, 2, hs/2]
// holding at least position_offset + T rows. y may be x (in place).
template <class T>
void rope_rotate(const kernels::RopeDims& d, const T* x, const float* table, T* y, bool inverse);

}  // namespace tessera::cpu
