// Emulated CUDA device (src/emu): CUDA's bf16 storage type, as the WMMA emulation (mma.h) reads
// it. Arithmetic on it is not emulated: Tessera's kernels convert through core/half.h.
#pragma once
#include <cstdint>

struct __nv_bfloat16 {
  uint16_t bits;
};
