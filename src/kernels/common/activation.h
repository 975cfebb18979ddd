// Which element-wise activation a kernel applies: an argument of the CPU and CUDA activation
// kernels (cpu/activation.h, cuda/activation.h) and of the ops that call them.
#pragma once
#include <cstdint>

namespace tessera::kernels {

enum class Activation : uint8_t { gelu, silu, relu };

}  // namespace tessera::kernels
