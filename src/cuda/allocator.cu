#include "cuda/allocator.h"

#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"

namespace tessera::cuda {
namespace {

// Pinned host blocks take the device's classes.
size_t pinned_size_class(size_t bytes) {
  return DeviceCachingAllocator::size_class(bytes);
}

void require_device(const char* who) {
  const DeviceProbe& p = probe_devices();
  TS_CHECK(p.count > 0, "{}: no CUDA device: {}", who, p.reason);
}

}  // namespace

size_t DeviceCachingAllocator::size_class(size_t bytes) {
  return cuda_size_class(bytes);
}

cudaEvent_t DeviceCachingAllocator::take_event() {
  if (!event_pool_.empty()) {
    cudaEvent_t e = event_pool_.back();
    event_pool_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void* DeviceCachingAllocator::allocate(size_t bytes) {
  return allocate_on(bytes, current_stream());
}

void* DeviceCachingAllocator::allocate_on(size_t bytes, cudaStream_t stream) {
  require_device("cuda allocator");
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.find({device, cls});
  if (it != free_.end() && !it->second.empty()) {
    std::vector<Cached>& list = it->second;
    // Prefer a block last used on this stream (or on a forgotten one): it needs no event.
    auto same = std::find_if(list.rbegin(), list.rend(), [&](const Cached& c) {
      return c.stream == stream || c.stream == no_stream();
    });
    const bool cross = same == list.rend();
    auto pick = cross ? list.end() - 1 : std::prev(same.base());
    Cached c = std::move(*pick);
    list.erase(pick);
    if (cross) {
      // Everything queued so far on the old stream, the block's last users included, must
      // finish before the new stream touches it.
      cudaEvent_t e = take_event();
      CUDA_CHECK(cudaEventRecord(e, c.stream));
      c.wait.push_back(e);
      ++cross_stream_;
    }
    for (cudaEvent_t e : c.wait) {
      CUDA_CHECK(cudaStreamWaitEvent(stream, e, 0));
      event_pool_.push_back(e);  // reusable: the wait captured the event's current state
    }
    live_[c.ptr] = Live{cls, device, stream, {}};
    mark_block_use(c.ptr, cls, bytes, stream);
    stats_.cache_hits++;
    stats_.in_use += cls;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    return c.ptr;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, cls);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    free_cached_locked();  // give the cache back and retry once
    err = cudaMalloc(&p, cls);
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail(
        "cuda allocator: cudaMalloc of {} bytes (class {}) on device {} failed: {} "
        "({} bytes in use, {} reserved)",
        bytes, cls, device, describe(err), stats_.in_use, stats_.reserved);
  }
  live_[p] = Live{cls, device, stream, {}};
  mark_block_use(p, cls, bytes, stream);
  stats_.reserved += cls;
  stats_.system_allocs++;
  stats_.in_use += cls;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  return p;
}

void DeviceCachingAllocator::record_stream(void* ptr, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  TS_CHECK(it != live_.end(), "cuda allocator: record_stream on {} which it did not allocate", ptr);
  Live& l = it->second;
  if (stream != l.stream &&
      std::find(l.also_on.begin(), l.also_on.end(), stream) == l.also_on.end())
    l.also_on.push_back(stream);
}

void DeviceCachingAllocator::forget_stream(cudaStream_t stream) {
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, list] : free_)
    for (Cached& c : list)
      if (c.stream == stream) c.stream = no_stream();
  for (auto& [ptr, l] : live_) {
    if (l.stream == stream) l.stream = no_stream();
    // Its record_stream entry: the work is done, nothing left to wait for.
    l.also_on.erase(std::remove(l.also_on.begin(), l.also_on.end(), stream), l.also_on.end());
  }
}

void DeviceCachingAllocator::release(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  TS_CHECK(it != live_.end(), "cuda allocator: release of {} ({} bytes) which it did not allocate",
           ptr, bytes);
  Live l = std::move(it->second);
  live_.erase(it);
  Cached c{ptr, l.stream, {}};
  // Free from here in its stream's order (use after release is caught on the emulated device).
  // A block also used on other streams is left as it is: their work may still be running.
  if (l.also_on.empty() && l.stream != no_stream()) mark_block_use(ptr, l.cls, 0, l.stream);
  for (cudaStream_t s : l.also_on) {
    cudaEvent_t e = take_event();
    CUDA_CHECK(cudaEventRecord(e, s));
    c.wait.push_back(e);
  }
  free_[{l.device, l.cls}].push_back(std::move(c));
  stats_.in_use -= l.cls;
}

void DeviceCachingAllocator::free_cached_locked() {
  if (free_.empty()) return;
  // Cached blocks may still be read by queued kernels; cudaFree waits for the device anyway,
  // but make it explicit so the events below are complete before they are destroyed.
  CUDA_CHECK(cudaDeviceSynchronize());
  for (auto& [key, list] : free_) {
    for (Cached& c : list) {
      CUDA_CHECK(cudaFree(c.ptr));
      stats_.reserved -= key.second;
      for (cudaEvent_t e : c.wait) event_pool_.push_back(e);
    }
  }
  free_.clear();
}

void DeviceCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  free_cached_locked();
}

AllocatorStats DeviceCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void DeviceCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_in_use = stats_.in_use;
}

uint64_t DeviceCachingAllocator::cross_stream_reuses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cross_stream_;
}

// ---- pinned host memory ----

void* PinnedHostAllocator::allocate(size_t bytes) {
  require_device("pinned host allocator");
  const size_t cls = pinned_size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.find(cls);
  if (it != free_.end()) {
    std::vector<Block>& list = it->second;
    // The first block whose last async copy has finished (or never had one).
    for (auto b = list.begin(); b != list.end(); ++b) {
      if (b->ready) {
        const cudaError_t q = cudaEventQuery(b->ready);
        if (q == cudaErrorNotReady) continue;
        CUDA_CHECK(q);
        CUDA_CHECK(cudaEventDestroy(b->ready));
      }
      void* p = b->ptr;
      list.erase(b);
      live_[p] = {cls, nullptr};
      stats_.cache_hits++;
      stats_.in_use += cls;
      stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
      return p;
    }
  }
  void* p = nullptr;
  CUDA_CHECK(cudaHostAlloc(&p, cls, cudaHostAllocDefault));
  live_[p] = {cls, nullptr};
  stats_.reserved += cls;
  stats_.system_allocs++;
  stats_.in_use += cls;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  return p;
}

void PinnedHostAllocator::record_use(void* ptr, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  TS_CHECK(it != live_.end(), "pinned allocator: record_use on {} which it did not allocate", ptr);
  cudaEvent_t& e = it->second.second;
  if (!e) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(e, stream));  // re-recording keeps only the latest use: enough,
                                           // since a stream's later work covers its earlier
}

void PinnedHostAllocator::release(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  TS_CHECK(it != live_.end(),
           "pinned allocator: release of {} ({} bytes) which it did not allocate", ptr, bytes);
  const auto [cls, ready] = it->second;
  live_.erase(it);
  free_[cls].push_back(Block{ptr, ready});
  stats_.in_use -= cls;
}

void PinnedHostAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [cls, list] : free_) {
    for (Block& b : list) {
      if (b.ready) {
        CUDA_CHECK(cudaEventSynchronize(b.ready));
        CUDA_CHECK(cudaEventDestroy(b.ready));
      }
      CUDA_CHECK(cudaFreeHost(b.ptr));
      stats_.reserved -= cls;
    }
  }
  free_.clear();
}

AllocatorStats PinnedHostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void PinnedHostAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_in_use = stats_.in_use;
}

DeviceCachingAllocator& device_allocator() {
  static auto* a = new DeviceCachingAllocator();
  return *a;
}

PinnedHostAllocator& pinned_allocator() {
  static auto* a = new PinnedHostAllocator();
  return *a;
}

PinnedBuffer::PinnedBuffer(size_t bytes)
    : ptr_(pinned_allocator().allocate(bytes)), bytes_(bytes) {}
PinnedBuffer::~PinnedBuffer() {
  if (ptr_) pinned_allocator().release(ptr_, bytes_);
}
PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) pinned_allocator().release(ptr_, bytes_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

namespace {
// Registers the device allocator when this file is linked in (a static library drops unused
// objects, so cuda::init() registers as well; link with WHOLE_ARCHIVE to rely on this alone).
// Registration touches no device: it only stores a pointer.
[[maybe_unused]] const bool g_registered = [] {
  register_allocator(DeviceType::cuda, &device_allocator());
  return true;
}();
}  // namespace

}  // namespace tessera::cuda
