// Dropout with the CPU's counter-based mask (cpu/dropout.h): element i is kept when
// uniform01(seed, offset + i) >= p, computed by the TS_HD copy of the hash in counter_rng.cuh,
// so a mask drawn on the GPU is bit-identical to the CPU's for the same (seed, offset).
#pragma once
#include <cstdint>

#include "cuda/device.h"

namespace tessera::cuda {

template <class T>
void dropout_forward(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset,
                     cudaStream_t s = current_stream());
template <class T>
void dropout_backward(const float* gy, T* gx, int64_t n, float p, uint64_t seed, uint64_t offset,
                      cudaStream_t s = current_stream());

}  // namespace tessera::cuda
