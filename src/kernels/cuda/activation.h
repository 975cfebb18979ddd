// Element-wise activations (GELU tanh form, SiLU, ReLU), forward and backward, on device
// buffers. The per-element math is kernels/common/activation_math.h, the CPU kernels' own
// (TS_HD), so both backends compute the same function to the ulp modulo FMA contraction.
#pragma once
#include <cstdint>

#include "cuda/device.h"
#include "kernels/common/activation.h"

namespace tessera::cuda {

template <class T>
void activation_forward(kernels::Activation act, const T* x, T* y, int64_t n,
                        cudaStream_t s = current_stream());
// gx = gy * act'(x), gy f32.
template <class T>
void activation_backward(kernels::Activation act, const T* x, const float* gy, T* gx, int64_t n,
                         cudaStream_t s = current_stream());

}  // namespace tessera::cuda
