// Element-wise activations (GELU tanh form, SiLU, ReLU) and their backward passes on contiguous
// buffers. Templated over the storage type (float, bf16, f16) with f32 arithmetic; the
// per-element math lives in activation_math.h.
#pragma once
#include <cstdint>

#include "core/half.h"

namespace tessera::cpu {

enum class Activation : uint8_t { gelu, silu, relu };

// y = act(x)
template <class T>
void activation_forward(Activation act, const T* x, T* y, int64_t n);
// gx = gy * act'(x). The incoming gradient is f32 (the autograd engine accumulates in f32).
template <class T>
void activation_backward(Activation act, const T* x, const float* gy, T* gx, int64_t n);

}  // namespace tessera::cpu
