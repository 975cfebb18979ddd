#include "core/allocator.h"

#include <cstdlib>

#include "core/error.h"

namespace tessera {

size_t CpuCachingAllocator::size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 63) / 64 * 64;
  int p = 63 - __builtin_clzll(bytes - 1);  // 2^p < bytes <= 2^(p+1)
  size_t step = (size_t(1) << p) / 8;
  return (bytes + step - 1) / step * step;
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

CpuCachingAllocator::~CpuCachingAllocator() { empty_cache(); }

namespace {
Allocator* g_allocators[2] = {nullptr, nullptr};
}

void register_allocator(DeviceType t, Allocator* a) { g_allocators[int(t)] = a; }

Allocator& allocator_for(Device d) {
  if (d.type == DeviceType::cpu) {
    // Never destroyed: tensors in static objects may be freed after main returns.
    static Allocator* cpu = new CpuCachingAllocator();
    return *cpu;
  }
  Allocator* a = g_allocators[int(d.type)];
  TS_CHECK(a != nullptr, "device {} is not available: Tessera was built without its backend",
           d.str());
  return *a;
}

}  // namespace tessera
