// Softmax over the last dim of a [rows, C] device buffer, and the fused softmax + negative log
// likelihood over [rows, V] logits, mirroring cpu/softmax.h. One block per row; f32 arithmetic;
// exp is math::exp_f32, the CPU kernels' own.
#pragma once
#include <cstdint>

#include "cuda/device.h"

namespace tessera::cuda {

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t C, cudaStream_t s = current_stream());
template <class T>
void softmax_backward(const T* y, const float* gy, T* gx, int64_t rows, int64_t C,
                      cudaStream_t s = current_stream());

// The mean loss over the counted rows (targets != ignore_index) into loss[0], on the device:
// per-row losses summed in f64 in row order on one block, divided by the count in f64 and
// rounded once to f32 (0 when every row is ignored), the CPU op's arithmetic. Nothing returns
// to the host. lse[r] as on the CPU (0 for ignored rows). Logits in storage type T (the LM
// head's output may be bf16).
template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, float* lse, float* loss,
                           int64_t rows, int64_t V, int32_t ignore_index,
                           cudaStream_t s = current_stream());
// loss[0] = the mean of row_loss over the rows whose target is not ignore_index: f64 sums in
// row order on one block, the mean rounded once (0 when every row is ignored). How both
// cross-entropy forwards (this file's and sharded_cross_entropy.h's) end.
void masked_row_mean(const float* row_loss, const int32_t* targets, int64_t rows,
                     int32_t ignore_index, float* loss, cudaStream_t s = current_stream());
// gx[r] = (g[0] / count) * (softmax(logits[r]) - onehot(targets[r])), 0 for ignored rows and
// everywhere when count is 0. g: the loss's incoming gradient, read on the device (no item()).
// Computed in f32 and rounded once into gx's type T (f32 or bf16), as the CPU kernel does.
template <class T>
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* g, int64_t count, T* gx, int64_t rows, int64_t V,
                            int32_t ignore_index, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
