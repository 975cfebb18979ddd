// Device and pinned memory of the emulated device. Each cudaMalloc is its own mapping, placed so
// that its end (rounded up to CUDA's 256-byte alignment) touches an inaccessible guard page:
// a kernel that runs off the end faults at once and the fault handler (launch.cpp) names the
// allocation. cudaFree makes the whole mapping inaccessible and keeps it for a while
// (quarantine), so a kernel or copy that uses freed memory is reported as such instead of
// reading whatever was allocated there next.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>

#include "emu/memory.h"
#include "emu/stream.h"

namespace tessera::emu {
namespace {

constexpr size_t kAlign = 256;                      // cudaMalloc's guarantee
constexpr size_t kQuarantineBytes = size_t(1) << 30;  // freed mappings kept inaccessible

struct Allocation {
  uintptr_t map = 0;
  size_t map_len = 0;
  uintptr_t user = 0;
  size_t bytes = 0;
  bool freed = false;
};

struct Registry {
  std::mutex mu;
  std::map<uintptr_t, Allocation> device;  // by user address
  std::deque<uintptr_t> quarantine;        // freed, oldest first
  size_t quarantined = 0;
  std::map<uintptr_t, size_t> pinned;  // pinned host blocks
};
Registry& registry() {
  static auto* r = new Registry();  // never destroyed: frees may come after main returns
  return *r;
}

size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}

size_t round_up(size_t n, size_t m) {
  return (n + m - 1) / m * m;
}

// The allocation whose user range or trailing guard page holds p (registry locked).
const Allocation* find_near(const Registry& r, uintptr_t p) {
  auto it = r.device.upper_bound(p);
  if (it == r.device.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  return p < a.map + a.map_len ? &a : nullptr;
}

std::string hex(uintptr_t p) {
  char b[32];
  std::snprintf(b, sizeof b, "%#zx", size_t(p));
  return b;
}

std::string describe_locked(const Registry& r, uintptr_t p, size_t bytes) {
  const Allocation* a = find_near(r, p);
  if (!a) return "";
  const std::string alloc = std::to_string(a->bytes) + "-byte device allocation at " + hex(a->user);
  if (a->freed) return "inside a " + alloc + " that was freed";
  if (p < a->user) return std::to_string(a->user - p) + " bytes before a " + alloc;
  // bytes == 0: a single faulting address, reported by how far past the end it lies.
  const uintptr_t end = a->user + a->bytes;
  if (p + (bytes ? bytes : 1) > end)
    return std::to_string(p + bytes - end) + " bytes past the end of a " + alloc;
  return "";
}

}  // namespace

cudaError_t device_malloc(void** out, size_t bytes) {
  *out = nullptr;
  if (bytes == 0) return cudaSuccess;
  const size_t page = page_size();
  const size_t user_len = round_up(bytes, kAlign);
  const size_t data_len = round_up(user_len, page);
  void* m = mmap(nullptr, data_len + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return cudaErrorMemoryAllocation;
  const auto map = reinterpret_cast<uintptr_t>(m);
  mprotect(reinterpret_cast<void*>(map + data_len), page, PROT_NONE);
  Allocation a{map, data_len + page, map + data_len - user_len, bytes, false};
  // Fresh device memory is not zero on a GPU: NaN bytes make a read before a write visible.
  std::memset(reinterpret_cast<void*>(a.user), 0xff, user_len);
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  r.device[a.user] = a;
  *out = reinterpret_cast<void*>(a.user);
  return cudaSuccess;
}

cudaError_t device_free(void* p) {
  if (!p) return cudaSuccess;
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  auto it = r.device.find(reinterpret_cast<uintptr_t>(p));
  if (it == r.device.end() || it->second.freed) {
    raise_sticky(cudaErrorInvalidValue,
                 "cudaFree(" + hex(reinterpret_cast<uintptr_t>(p)) + "): " +
                     (it == r.device.end() ? "not the start of a device allocation"
                                           : "already freed"));
    return cudaErrorInvalidValue;
  }
  Allocation& a = it->second;
  mprotect(reinterpret_cast<void*>(a.map), a.map_len, PROT_NONE);
  a.freed = true;
  r.quarantine.push_back(a.user);
  r.quarantined += a.map_len;
  while (r.quarantined > kQuarantineBytes && !r.quarantine.empty()) {
    auto old = r.device.find(r.quarantine.front());
    r.quarantine.pop_front();
    r.quarantined -= old->second.map_len;
    munmap(reinterpret_cast<void*>(old->second.map), old->second.map_len);
    r.device.erase(old);
  }
  return cudaSuccess;
}

cudaError_t pinned_malloc(void** out, size_t bytes) {
  *out = std::aligned_alloc(kAlign, round_up(bytes ? bytes : 1, kAlign));
  if (!*out) return cudaErrorMemoryAllocation;
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  r.pinned[reinterpret_cast<uintptr_t>(*out)] = bytes;
  return cudaSuccess;
}

cudaError_t pinned_free(void* p) {
  if (!p) return cudaSuccess;
  Registry& r = registry();
  {
    std::lock_guard lk(r.mu);
    if (!r.pinned.erase(reinterpret_cast<uintptr_t>(p))) return cudaErrorInvalidValue;
  }
  std::free(p);
  return cudaSuccess;
}

bool is_pinned(const void* p, size_t bytes) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto u = reinterpret_cast<uintptr_t>(p);
  auto it = r.pinned.upper_bound(u);
  if (it == r.pinned.begin()) return false;
  --it;
  return u + bytes <= it->first + it->second;
}

bool is_device_pointer(const void* p) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto u = reinterpret_cast<uintptr_t>(p);
  const Allocation* a = find_near(r, u);
  return a && !a->freed && u >= a->user && u < a->user + a->bytes;
}

void check_device_range(const void* p, size_t bytes, Access access, const std::string& what) {
  if (bytes == 0) return;
  Registry& r = registry();
  std::string problem;
  {
    std::lock_guard lk(r.mu);
    const auto u = reinterpret_cast<uintptr_t>(p);
    const Allocation* a = find_near(r, u);
    if (!a || u < a->user)
      problem = "not device memory";
    else
      problem = describe_locked(r, u, bytes);
  }
  if (problem.empty()) return;
  throw DeviceFault(cudaErrorIllegalAddress,
                    what + ": " + (access == Access::write ? "write of " : "read of ") +
                        std::to_string(bytes) + " bytes at " +
                        hex(reinterpret_cast<uintptr_t>(p)) + ": " + problem);
}

std::string describe_address(const void* p) {
  Registry& r = registry();
  std::unique_lock lk(r.mu, std::try_to_lock);
  if (!lk.owns_lock()) return "";
  return describe_locked(r, reinterpret_cast<uintptr_t>(p), 0);
}

}  // namespace tessera::emu
