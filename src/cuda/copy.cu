#include "cuda/copy.h"

#include <cstring>

#include "core/error.h"
#include "cuda/allocator.h"
#include "cuda/cuda_check.h"

namespace tessera::cuda {

void copy_h2d(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
}
void copy_d2h(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
}
void copy_d2d(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
}
void memset_async(void* dst, int byte, size_t bytes, cudaStream_t s) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, s));
}

Tensor to_device(const Tensor& host, int device) {
  TS_CHECK(host.device().is_cpu(), "cuda::to_device: source {} is on {}, expected cpu", host.desc(),
           host.device().str());
  init(device);
  const Tensor src = host.contiguous();
  Tensor dst = Tensor::empty(src.shape(), src.dtype(), Device::cuda(device));
  // Host tensors live in the CPU allocator's pageable memory, and cudaMemcpyAsync from pageable
  // memory returns only once the bytes are staged: the caller may free or reuse `host` at once,
  // with no wait for the device (the emulated device stages the same way; a wait here was one
  // host stall per training step, for the GPT's position ids).
  copy_h2d(dst.raw_data(), src.raw_data(), src.nbytes(), current_stream());
  return dst;
}

Tensor upload_async(const Tensor& host, int device) {
  TS_CHECK(host.device().is_cpu(), "cuda::upload_async: source {} is on {}, expected cpu",
           host.desc(), host.device().str());
  init(device);
  const Tensor src = host.contiguous();
  Tensor dst = Tensor::empty(src.shape(), src.dtype(), Device::cuda(device));
  if (src.nbytes() == 0) return dst;
  const cudaStream_t s = current_stream();
  PinnedBuffer staging(src.nbytes());
  std::memcpy(staging.data(), src.raw_data(), src.nbytes());
  copy_h2d(dst.raw_data(), staging.data(), src.nbytes(), s);
  pinned_allocator().record_use(staging.data(), s);  // released below, reused after the copy
  keep_host_mirror(dst, src);  // ids: read back (range checks) without waiting for the copy
  return dst;
}

namespace {
// The copy lands in a pinned buffer; an event marks it done. wait() synchronises on the event,
// which costs nothing when the host has already synchronised the stream past it.
class PinnedRead final : public HostRead {
 public:
  PinnedRead(const void* src, size_t bytes, cudaStream_t s) : buf_(bytes ? bytes : 1) {
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    if (bytes) copy_d2h(buf_.data(), src, bytes, s);
    CUDA_CHECK(cudaEventRecord(done_, s));
  }
  ~PinnedRead() override {
    // The copy must be done before the buffer goes back to the pool (a no-op once waited).
    (void)cudaEventSynchronize(done_);
    (void)cudaEventDestroy(done_);
  }
  PinnedRead(const PinnedRead&) = delete;
  PinnedRead& operator=(const PinnedRead&) = delete;
  const void* wait() override {
    CUDA_CHECK(cudaEventSynchronize(done_));
    return buf_.data();
  }

 private:
  PinnedBuffer buf_;
  cudaEvent_t done_ = nullptr;
};
}  // namespace

std::unique_ptr<HostRead> read_async(const void* src, size_t bytes, cudaStream_t s) {
  return std::make_unique<PinnedRead>(src, bytes, s);
}

Tensor to_host(const Tensor& dev) {
  TS_CHECK(dev.device().type == DeviceType::cuda,
           "cuda::to_host: source {} is on {}, expected cuda", dev.desc(), dev.device().str());
  TS_CHECK(dev.is_contiguous(), "cuda::to_host: source {} must be contiguous", dev.desc());
  Tensor dst = Tensor::empty(dev.shape(), dev.dtype());
  const cudaStream_t s = current_stream();
  copy_d2h(dst.raw_data(), dev.raw_data(), dev.nbytes(), s);
  synchronize(s);
  return dst;
}

Tensor zeros(const Shape& shape, DType dtype, int device) {
  init(device);
  Tensor t = Tensor::empty(shape, dtype, Device::cuda(device));
  memset_async(t.raw_data(), 0, t.nbytes(), current_stream());
  return t;
}

}  // namespace tessera::cuda
