#include "core/allocator.h"

#include <cstdlib>

#include "core/error.h"
#include "core/meta_device.h"

namespace tessera {

namespace {
// Multiples of `granule` up to `small_limit`, then 8 classes per power of two (<= 12.5% waste).
size_t size_class_of(size_t bytes, size_t granule, size_t small_limit) {
  if (bytes == 0) bytes = 1;
  if (bytes <= small_limit) return (bytes + granule - 1) / granule * granule;
  const int p = 63 - __builtin_clzll(bytes - 1);  // 2^p < bytes <= 2^(p+1)
  const size_t step = (size_t(1) << p) / 8;
  return (bytes + step - 1) / step * step;
}
}  // namespace

size_t host_size_class(size_t bytes) {
  return size_class_of(bytes, 64, 4096);
}

// cudaMalloc aligns to 256; 512 keeps the classes few.
size_t cuda_size_class(size_t bytes) {
  return size_class_of(bytes, 512, size_t(1) << 20);
}

void* CpuCachingAllocator::allocate(size_t bytes) {
  size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* p = nullptr;
  auto it = free_.find(cls);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.cache_hits++;
  } else {
    p = std::aligned_alloc(kAlignment, cls);
    if (!p) {  // give cached blocks back and retry once before failing
      for (auto& [c, v] : free_) {
        for (void* q : v) std::free(q), stats_.reserved -= c;
        v.clear();
      }
      p = std::aligned_alloc(kAlignment, cls);
    }
    TS_CHECK(p != nullptr, "CpuCachingAllocator: out of memory allocating {} bytes", cls);
    stats_.reserved += cls;
    stats_.system_allocs++;
  }
  stats_.in_use += cls;
  if (stats_.in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.in_use;
  return p;
}

void CpuCachingAllocator::release(void* ptr, size_t bytes) {
  if (!ptr) return;
  size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  free_[cls].push_back(ptr);
  stats_.in_use -= cls;
}

AllocatorStats CpuCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CpuCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [c, v] : free_) {
    for (void* q : v) std::free(q), stats_.reserved -= c;
    v.clear();
  }
}

void CpuCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_in_use = stats_.in_use;
}

CpuCachingAllocator::~CpuCachingAllocator() {
  empty_cache();
}

namespace {
Allocator* g_allocators[3] = {nullptr, nullptr, nullptr};
}

void register_allocator(DeviceType t, Allocator* a) {
  g_allocators[int(t)] = a;
}

Allocator& allocator_for(Device d) {
  if (d.type == DeviceType::cpu) {
    // Never destroyed: tensors in static objects may be freed after main returns.
    static Allocator* cpu = new CpuCachingAllocator();
    return *cpu;
  }
  if (d.type == DeviceType::meta) return meta_allocator(d.index);
  Allocator* a = g_allocators[int(d.type)];
  TS_CHECK(a != nullptr, "device {} is not available: Tessera was built without its backend",
           d.str());
  return *a;
}

}  // namespace tessera
