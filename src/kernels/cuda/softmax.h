// Softmax over the last dim of a [rows, C] device buffer, and the fused softmax + negative log
// likelihood over [rows, V] logits, mirroring cpu/softmax.h. One block per row; f32 arithmetic;
// exp is math::exp_f32, the CPU kernels' own.
#pragma once
#include <cstdint>

#include "cuda/device.h"
#include "kernels/common/cross_entropy.h"

namespace tessera::cuda {

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t C, cudaStream_t s = current_stream());
template <class T>
void softmax_backward(const T* y, const float* gy, T* gx, int64_t rows, int64_t C,
                      cudaStream_t s = current_stream());

// Per-row losses on the device, summed in f64 in row order on one block, so the result is
// reproducible; returns to the host (synchronises the stream). lse[r] as on the CPU (0 for
// ignored rows). Logits in storage type T (the LM head's output may be bf16).
template <class T>
kernels::CrossEntropySum cross_entropy_forward(const T* logits, const int32_t* targets, float* lse,
                                               int64_t rows, int64_t V, int32_t ignore_index,
                                               cudaStream_t s = current_stream());
// gx[r] = scale * (softmax(logits[r]) - onehot(targets[r])), 0 for ignored rows.
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const float* lse, float scale,
                            T* gx, int64_t rows, int64_t V, int32_t ignore_index,
                            cudaStream_t s = current_stream());

}  // namespace tessera::cuda
