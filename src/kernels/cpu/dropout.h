// Dropout with a counter-based mask: element i is kept when
// Generator::uniform01(seed, offset + i) >= p, so the mask depends only on (seed, offset, i),
// never on the thread count, and the backward regenerates it instead of storing it.
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::cpu {

// y = keep(i) ? x / (1 - p) : 0, for p in [0, 1).
template <class T>
void dropout_forward(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset);
// gx = keep(i) ? gy / (1 - p) : 0, with the same (seed, offset) as the forward.
template <class T>
void dropout_backward(const float* gy, T* gx, int64_t n, float p, uint64_t seed, uint64_t offset);

}  // namespace tessera::cpu
