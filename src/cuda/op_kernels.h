// The CUDA backend's op kernels (kernels/common/op_kernels.h), defined in op_kernels.cu: the
// table the backend hands core as DeviceBackend::ops (backend.cu), through which src/ops reaches
// every kernel in src/kernels/cuda.
#pragma once
#include "kernels/common/op_kernels.h"

namespace tessera::cuda {

extern const kernels::OpKernels kOpKernels;

}  // namespace tessera::cuda
