// The CUDA runtime as Tessera sees it: whether a device is there (and if not, why), the
// one-time backend initialisation, and the per-thread current stream that kernels, copies and
// the caching allocator use when no stream is passed.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace tessera::cuda {

struct DeviceProbe {
  int count = 0;       // devices cudaGetDeviceCount reports (0 when it fails)
  std::string reason;  // empty when count > 0; else what the runtime said, e.g.
                       // "cudaErrorNoDevice: no CUDA-capable device is detected"
};

// Asks the runtime once per process and caches the answer (probing is not free, and a missing
// driver answers the same every time).
const DeviceProbe& probe_devices();
inline bool available() {
  return probe_devices().count > 0;
}

// Registers the CUDA caching allocator for DeviceType::cuda (so Tensor::empty(..., cuda)
// works) and selects `device`. Idempotent; safe to call without a device (registration needs
// none, the first allocation then fails with the probe's reason).
void init(int device = 0);

// "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)" for logs and the GPU check script.
std::string device_summary(int device = 0);
// The device's total memory in bytes (cudaDeviceProp::totalGlobalMem); 0 without a device.
size_t device_memory_bytes(int device = 0);

// The stream this thread issues work on; nullptr is the legacy default stream.
cudaStream_t current_stream();
void set_current_stream(cudaStream_t s);

// Makes `s` current for a scope and restores the previous stream after it.
class StreamGuard {
 public:
  explicit StreamGuard(cudaStream_t s) : prev_(current_stream()) { set_current_stream(s); }
  ~StreamGuard() { set_current_stream(prev_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  cudaStream_t prev_;
};

// Blocks until all work on `s` has finished; throws on an asynchronous kernel error.
void synchronize(cudaStream_t s);

// The points where the host has waited for the device since the process started, as the
// emulated CUDA device counts them (emu/device.h: a synchronising call that found work the host
// had not yet seen complete); -1 on a GPU, whose runtime does not count them.
int64_t host_waits();

// The caching allocator's block [p, p + capacity) has its first `used` bytes in use (0: it is
// free), in stream `s`'s order. The emulated device checks kernels and copies against it
// (docs/CUDA.md, "bytes in use"); on a GPU nothing is done.
void mark_block_use(void* p, size_t capacity, size_t used, cudaStream_t s);

}  // namespace tessera::cuda
