// Caching allocators for CUDA device memory and pinned (page-locked) host memory.
//
// Device: cudaMalloc / cudaFree synchronise the device and cost tens of microseconds, so freed
// blocks go to free lists keyed by (device, size class) and are handed out again. Reuse is
// stream-aware. A block remembers the stream it was allocated on; a block freed while kernels on
// that stream may still read it is safe to hand out again on the *same* stream at once (stream
// order puts the new user's work after the old), but on *another* stream only after an event
// recorded on the old stream, which the new stream waits on (cudaStreamWaitEvent: the host does
// not block). A block also used on other streams must say so with record_stream(), and its reuse
// then waits on those streams too.
//
// Pinned host: the data loader's staging buffers. cudaMemcpyAsync from pageable memory is
// synchronous; from pinned memory it overlaps with compute. A pinned block freed while an async
// copy may still read it (record_use) is reused only once that copy's event has completed.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/allocator.h"

namespace tessera::cuda {

class DeviceCachingAllocator final : public Allocator {
 public:
  // 512-byte multiples up to 1 MiB, then 8 classes per power of two (<= 12.5% waste), so the
  // few dozen distinct activation sizes of a training step map onto few classes.
  static size_t size_class(size_t bytes);

  // On the current stream (cuda::current_stream()).
  void* allocate(size_t bytes) override;
  void* allocate_on(size_t bytes, cudaStream_t stream);
  void release(void* ptr, size_t bytes) override;
  // ptr (live, from this allocator) is also used by work on `stream`: its reuse after release
  // waits for that work.
  void record_stream(void* ptr, cudaStream_t stream);
  // Call before destroying a stream that allocated from here: waits for its work, then lets its
  // cached blocks (and its live blocks, once released) go to any stream without an event, so
  // no event is ever recorded on the dead handle. Streams are meant to be long-lived (compute,
  // communication, copy); this is for the ones that are not, tests included.
  void forget_stream(cudaStream_t stream);

  AllocatorStats stats() const override;
  void empty_cache() override;  // frees every cached block (synchronises the device)
  void reset_peak() override;
  // Cached blocks handed to a stream other than the one that freed them (each behind an event).
  uint64_t cross_stream_reuses() const;

 private:
  struct Live {
    size_t cls;
    int device;
    cudaStream_t stream;
    std::vector<cudaStream_t> also_on;  // from record_stream
  };
  struct Cached {
    void* ptr;
    cudaStream_t stream;
    std::vector<cudaEvent_t> wait;  // events on the also_on streams, recorded at release
  };
  // The tag of blocks whose stream is gone and whose work is complete: reusable anywhere.
  static cudaStream_t no_stream() { return reinterpret_cast<cudaStream_t>(~uintptr_t(0)); }
  cudaEvent_t take_event();
  void free_cached_locked();

  mutable std::mutex mu_;
  std::unordered_map<void*, Live> live_;
  std::map<std::pair<int, size_t>, std::vector<Cached>> free_;
  std::vector<cudaEvent_t> event_pool_;
  AllocatorStats stats_;
  uint64_t cross_stream_ = 0;
};

class PinnedHostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  // An async copy on `stream` reads or writes ptr: a release waits for it before reuse.
  void record_use(void* ptr, cudaStream_t stream);
  AllocatorStats stats() const override;
  void empty_cache() override;
  void reset_peak() override;

 private:
  struct Block {
    void* ptr;
    cudaEvent_t ready;  // null when no copy was recorded
  };
  mutable std::mutex mu_;
  std::unordered_map<void*, std::pair<size_t, cudaEvent_t>> live_;  // class, last use event
  std::map<size_t, std::vector<Block>> free_;
  AllocatorStats stats_;
};

// The process-wide allocators (never destroyed: tensors in static objects may be freed after
// main returns, and the CUDA runtime may already be gone then).
DeviceCachingAllocator& device_allocator();
PinnedHostAllocator& pinned_allocator();

// A pinned host buffer from pinned_allocator(), released on destruction.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace tessera::cuda
