// Element-wise activations (GELU tanh form, SiLU, ReLU), forward and backward, on device
// buffers. The per-element math is cpu/activation_math.h itself (TS_HD), so both backends
// compute the same function to the ulp modulo FMA contraction.
#pragma once
#include <cstdint>

#include "cuda/device.h"
#include "kernels/cpu/activation.h"  // Activation

namespace tessera::cuda {

using cpu::Activation;

template <class T>
void activation_forward(Activation act, const T* x, T* y, int64_t n,
                        cudaStream_t s = current_stream());
// gx = gy * act'(x), gy f32.
template <class T>
void activation_backward(Activation act, const T* x, const float* gy, T* gx, int64_t n,
                         cudaStream_t s = current_stream());

}  // namespace tessera::cuda
