// SwiGLU fused, forward and backward, on device buffers: cpu/swiglu.h's twin, argument for
// argument, plus a trailing stream. The per-element math is kernels/common/activation_math.h's.
#pragma once
#include <cstdint>

#include "cuda/device.h"

namespace tessera::cuda {

template <class TI, class TO>
void swiglu_forward(const TI* x, TO* y, int64_t rows, int64_t F, cudaStream_t s = current_stream());

template <class T>
void swiglu_backward(const T* x, const float* gy, T* gx, int64_t rows, int64_t F,
                     cudaStream_t s = current_stream());

}  // namespace tessera::cuda
