// Kernel launches written once for both builds of the CUDA backend:
//
//   launch<add_kernel>(grid, block, smem, stream, a, b, y, n);
//
// is `add_kernel<<<grid, block, smem, stream>>>(a, b, y, n)` under nvcc, and in the emulated
// build (TESSERA_CUDA_EMULATION: the same sources compiled by g++, src/emu) a launch on the
// emulated device, which runs the kernel's threads as fibers on the stream's host thread and
// names the kernel in its reports. The kernel is a template argument so that its name reaches
// the emulator (__PRETTY_FUNCTION__) without a string at every call site.
//
// Shared memory declared with `extern __shared__` has no host equivalent; kernels write
//   TS_DYNAMIC_SHARED(float, smem);
// instead (an array of the launch's dynamic shared memory, 128-byte aligned in both builds).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#if defined(__CUDACC__)
#define TS_DYNAMIC_SHARED(type, name) extern __shared__ __align__(128) type name[]
#else
#include "emu/kernel.h"
#define TS_DYNAMIC_SHARED(type, name) \
  type* const name = static_cast<type*>(::tessera::emu::dynamic_shared())
#endif

namespace tessera::cuda {

template <auto Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const Args&... args) {
#if defined(__CUDACC__)
  Kernel<<<grid, block, smem, stream>>>(args...);
#else
  ::tessera::emu::launch_kernel(::tessera::emu::kernel_name<Kernel>(),
                                reinterpret_cast<const void*>(Kernel), grid, block, smem, stream,
                                [=] { Kernel(args...); });
#endif
}

}  // namespace tessera::cuda
