// Device and pinned host memory of the emulated device (memory.cpp; internal to src/emu).
#pragma once
#include <cstddef>

#include "emu/device.h"

namespace tessera::emu {

cudaError_t device_malloc(void** out, size_t bytes);
cudaError_t device_free(void* p);  // the caller has waited for the device
cudaError_t pinned_malloc(void** out, size_t bytes);
cudaError_t pinned_free(void* p);
// [p, p + bytes) lies inside one pinned block.
bool is_pinned(const void* p, size_t bytes);

}  // namespace tessera::emu
