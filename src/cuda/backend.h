// The CUDA backend's table (core/backend.h), defined in backend.cu. Only core/backend.cpp
// needs this: everything else reaches the table through tessera::backend_for. No CUDA headers
// here, so core can include it.
#pragma once
#include "core/backend.h"

namespace tessera::cuda {

const DeviceBackend& backend_table();

}  // namespace tessera::cuda
