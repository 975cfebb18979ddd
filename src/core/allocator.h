// Caching allocators. Freed blocks go back to a free list keyed by size class and are handed
// out again without touching the system allocator, so a training step that repeats the same
// shapes allocates nothing after its first iteration.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "core/dtype.h"

namespace tessera {

struct AllocatorStats {
  size_t in_use = 0;           // bytes handed out and not yet freed (rounded to size classes)
  size_t peak_in_use = 0;      // high-water mark of in_use
  size_t reserved = 0;         // bytes obtained from the system (in use + cached)
  uint64_t system_allocs = 0;  // calls that reached the system allocator
  uint64_t cache_hits = 0;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr, size_t bytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void empty_cache() = 0;
  virtual void reset_peak() = 0;
};

// The size classes of the two caching allocators: a request of `bytes` takes a block of the
// class's size. Here, not in the CUDA sources, because the meta device (core/meta_device.h)
// reproduces either allocator's bookkeeping without the device.
size_t host_size_class(size_t bytes);  // 64-byte multiples to 4 KiB, then 8 per power of two
size_t cuda_size_class(size_t bytes);  // 512-byte multiples to 1 MiB, then 8 per power of two

// 64-byte aligned host memory (a cache line; what AVX-512 loads and oneDNN like best).
class CpuCachingAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  // Size classes: multiples of 64 up to 4 KiB, then 8 steps per power of two (<= 12.5% waste).
  static size_t size_class(size_t bytes) { return host_size_class(bytes); }

  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  AllocatorStats stats() const override;
  void empty_cache() override;
  void reset_peak() override;
  ~CpuCachingAllocator() override;

 private:
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

// The allocator for a device. CUDA registers its own when built in.
Allocator& allocator_for(Device d);
void register_allocator(DeviceType t, Allocator* a);

}  // namespace tessera
