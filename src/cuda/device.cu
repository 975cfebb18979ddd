#include "cuda/device.h"

#include <mutex>

#include "core/allocator.h"
#include "core/error.h"
#include "cuda/allocator.h"
#include "cuda/cuda_check.h"
#if TESSERA_CUDA_EMULATION
#include "emu/device.h"
#endif

namespace tessera::cuda {

const DeviceProbe& probe_devices() {
  static const DeviceProbe probe = [] {
    DeviceProbe p;
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // a failed probe must not poison later checks
      p.reason = describe(err);
    } else if (n == 0) {
      p.reason = "cudaGetDeviceCount reports 0 devices";
    } else {
      p.count = n;
    }
    return p;
  }();
  return probe;
}

void init(int device) {
  static std::once_flag registered;
  std::call_once(registered, [] { register_allocator(DeviceType::cuda, &device_allocator()); });
  const DeviceProbe& p = probe_devices();
  if (p.count == 0) return;
  TS_CHECK(device >= 0 && device < p.count, "cuda::init: device {} out of range ({} devices)",
           device, p.count);
  CUDA_CHECK(cudaSetDevice(device));
}

std::string device_summary(int device) {
  const DeviceProbe& p = probe_devices();
  if (p.count == 0) return "no CUDA device: " + p.reason;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB)", prop.name, prop.major, prop.minor,
                     prop.multiProcessorCount, double(prop.totalGlobalMem) / (1u << 30));
}

size_t device_memory_bytes(int device) {
  if (probe_devices().count == 0) return 0;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.totalGlobalMem;
}

namespace {
thread_local cudaStream_t t_stream = nullptr;
}

cudaStream_t current_stream() {
  return t_stream;
}
void set_current_stream(cudaStream_t s) {
  t_stream = s;
}

void synchronize(cudaStream_t s) {
  CUDA_CHECK(cudaStreamSynchronize(s));
}

int64_t host_waits() {
#if TESSERA_CUDA_EMULATION
  return int64_t(emu::host_waits());
#else
  return -1;
#endif
}

void mark_block_use(void* p, size_t capacity, size_t used, cudaStream_t s) {
#if TESSERA_CUDA_EMULATION
  emu::mark_block_use(p, capacity, used, s);
#else
  (void)p, (void)capacity, (void)used, (void)s;
#endif
}

}  // namespace tessera::cuda
