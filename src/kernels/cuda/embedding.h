// Embedding lookup and its scatter-add backward on device buffers, mirroring cpu/embedding.h.
// Ids must already lie in [0, V).
#pragma once
#include <cstdint>

#include "cuda/device.h"

namespace tessera::cuda {

// y[i, :] = w[ids[i], :]
template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C,
                       cudaStream_t s = current_stream());

// dw = 0, then dw[ids[i], :] += gy[i, :]. f32 atomics: repeated ids (a token that occurs many
// times in the batch) add in whatever order the hardware serialises them, so the result may
// differ from the CPU's in the last bits (the CPU sums in order of i); the test bounds it.
void embedding_backward(const float* gy, const int32_t* ids, float* dw, int64_t n, int64_t V,
                        int64_t C, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
