// The CUDA backend's table (core/backend.h), defined in backend.cu, without a communicator: only
// src/backends/cuda.cu uses this (it adds dist's NCCL communicator and hands the table to core);
// everything else reaches the table through tessera::backend_for.
#pragma once
#include "core/backend.h"

namespace tessera::cuda {

const DeviceBackend& backend_table();

}  // namespace tessera::cuda
