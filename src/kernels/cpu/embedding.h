// Embedding lookup: rows of a [V, C] table gathered by i32 ids, and the scatter-add backward.
// Ids must already be checked to lie in [0, V) or equal kernels::kSkippedId (-1: another
// rank's row under vocabulary parallelism), which reads as a zero row and takes no gradient.
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::cpu {

// y[i, :] = w[ids[i], :] for i < n (storage type T: float, bf16 or f16).
template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C);

// dw = 0 (unless accumulate), then dw[ids[i], :] += gy[i, :] for i < n (dw is [V, C] f32).
// Threads own column ranges, so repeated ids need no atomics and every sum runs over i in order
// (reproducible).
void embedding_backward(const float* gy, const int32_t* ids, float* dw, int64_t n, int64_t V,
                        int64_t C, bool accumulate = false);

}  // namespace tessera::cpu
