// Vocabulary-parallel cross-entropy on device buffers, mirroring cpu/sharded_cross_entropy.h
// (the three phases are described there). The combine leaves the mean loss on the device, as
// cuda::cross_entropy_forward does: nothing returns to the host.
#pragma once
#include <cstdint>

#include "cuda/device.h"

namespace tessera::cuda {

void sharded_cross_entropy_stats(const float* logits, const int32_t* targets, float* stats,
                                 int64_t rows, int64_t V, int64_t first_id, int32_t ignore_index,
                                 cudaStream_t s = current_stream());

// lse[r] as on the CPU; loss[0] = the mean over counted rows (f64 sum in row order, rounded
// once; 0 when every row is ignored).
void sharded_cross_entropy_combine(const float* all, int64_t ranks, const int32_t* targets,
                                   float* lse, float* loss, int64_t rows, int32_t ignore_index,
                                   cudaStream_t s = current_stream());

// gx as on the CPU with scale = g[0] / count, g read on the device; computed in f32 and
// rounded once into T (f32 or bf16).
template <class T>
void sharded_cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                                    const float* g, int64_t count, T* gx, int64_t rows, int64_t V,
                                    int64_t first_id, int32_t ignore_index,
                                    cudaStream_t s = current_stream());

}  // namespace tessera::cuda
