// The device backends of a CPU-only build: none (the CPU is the host, called directly; see
// core/backend.h). A build with CUDA compiles cuda.cu in this file's place (cmake/cuda.cmake).
#include "core/backend.h"

namespace tessera {

const DeviceBackend* built_in_backend(DeviceType) {
  return nullptr;
}

}  // namespace tessera
