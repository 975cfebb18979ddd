// Host <-> device copies, raw and for tensors. Raw copies are asynchronous on the given stream
// (the caller synchronises, or uses pinned host memory and events); the tensor helpers are the
// simple synchronous path for tests, checkpoints and the first op-level dispatch.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include <memory>

#include "core/backend.h"
#include "core/tensor.h"
#include "cuda/device.h"

namespace tessera::cuda {

// cudaMemcpyAsync in the given direction. From pageable host memory the runtime stages the copy
// and returns only once the source has been read; from pinned memory it returns at once.
void copy_h2d(void* dst, const void* src, size_t bytes, cudaStream_t s = current_stream());
void copy_d2h(void* dst, const void* src, size_t bytes, cudaStream_t s = current_stream());
void copy_d2d(void* dst, const void* src, size_t bytes, cudaStream_t s = current_stream());
void memset_async(void* dst, int byte, size_t bytes, cudaStream_t s = current_stream());

// A contiguous copy of a CPU tensor on CUDA device `device` (no autograd edge), queued on the
// current stream (kernels queued after it see the data). Returns without waiting for the
// device: the source (pageable, from the CPU allocator) has been staged by then, so the caller
// may free or reuse it at once.
Tensor to_device(const Tensor& host, int device = 0);
// The data loader's copy: the CPU tensor is staged in a pinned buffer (a host memcpy) and copied
// to the device asynchronously on the current stream; returns without waiting. The caller may
// reuse `host` at once; kernels queued later on the same stream see the data; the pinned buffer
// is reused only after the copy has completed (PinnedHostAllocator::record_use). Unlike
// to_device, the host's copy is a memcpy into pinned memory and the device's is a DMA that
// overlaps compute (a pageable copy is staged by the driver, synchronously, at the call).
Tensor upload_async(const Tensor& host, int device = 0);
// Starts copying `bytes` of device memory to pinned host memory on `s` and returns at once;
// wait() gives the bytes (core/backend.h's HostRead).
std::unique_ptr<HostRead> read_async(const void* src, size_t bytes,
                                     cudaStream_t s = current_stream());
// A CPU copy of a CUDA tensor, complete on return (synchronises the current stream).
Tensor to_host(const Tensor& dev);
// A CUDA tensor of zeros.
Tensor zeros(const Shape& shape, DType dtype, int device = 0);

}  // namespace tessera::cuda
