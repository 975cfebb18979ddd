// LayerNorm and RMSNorm over the last dim of a [rows, C] device buffer, mirroring cpu/norm.h:
// x, y, gx in storage type T; weight, bias, their gradients and the saved statistics f32; f32
// arithmetic. weight / bias may be null (scale 1, shift 0).
//
// Forward and the input gradient are fused, one block per row (the statistics and the two
// backward row sums are block reductions). The parameter gradients are column sums over rows:
// per-chunk partials in a fixed order, then one pass over the partials in chunk order, so they
// are reproducible without atomics.
#pragma once
#include <cstdint>

#include "cuda/device.h"

namespace tessera::cuda {

template <class T>
void layer_norm_forward(const T* x, const float* w, const float* b, T* y, float* mean, float* rstd,
                        int64_t rows, int64_t C, float eps, cudaStream_t s = current_stream());
template <class T>
void layer_norm_backward(const T* x, const float* w, const float* mean, const float* rstd,
                         const float* gy, T* gx, float* dw, float* db, int64_t rows, int64_t C,
                         cudaStream_t s = current_stream());
template <class T>
void rms_norm_forward(const T* x, const float* w, T* y, float* rstd, int64_t rows, int64_t C,
                      float eps, cudaStream_t s = current_stream());
template <class T>
void rms_norm_backward(const T* x, const float* w, const float* rstd, const float* gy, T* gx,
                       float* dw, int64_t rows, int64_t C, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
