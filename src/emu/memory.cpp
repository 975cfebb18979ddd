// Device and pinned memory of the emulated device. Each cudaMalloc is its own mapping, placed so
// that its end (rounded up to CUDA's 256-byte alignment) touches an inaccessible guard page:
// a kernel that runs off the end faults at once and the fault handler (launch.cpp) names the
// allocation. cudaFree makes the whole mapping inaccessible and keeps it for a while
// (quarantine), so a kernel or copy that uses freed memory is reported as such instead of
// reading whatever was allocated there next.
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu/memory.h"
#include "emu/racecheck.h"
#include "emu/stream.h"
#include "emu/streamrace.h"

namespace tessera::emu {
namespace {

constexpr size_t kAlign = 256;                        // cudaMalloc's guarantee
constexpr size_t kQuarantineBytes = size_t(1) << 30;  // freed mappings kept inaccessible

struct Allocation {
  uintptr_t map = 0;
  size_t map_len = 0;
  uintptr_t user = 0;
  size_t bytes = 0;
  bool freed = false;
};

// A queued copy that uses a pinned block (memory.h).
struct PinnedUse {
  CUstream_st* stream;
  uint64_t pos;
  bool device_writes;
  std::string what;
};

struct PinnedBlock {
  size_t bytes = 0;    // as asked
  size_t map_len = 0;  // whole pages
  uintptr_t view = 0;  // the streams' mapping of the same pages
  std::vector<PinnedUse> uses;
  int prot = PROT_READ | PROT_WRITE;  // of the host's view now
};

struct Registry {
  std::mutex mu;
  std::map<uintptr_t, Allocation> device;  // by user address
  std::deque<uintptr_t> quarantine;        // freed, oldest first
  size_t quarantined = 0;
  std::map<uintptr_t, PinnedBlock> pinned;  // by the host's address
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
  streamrace::allocated(*out, bytes);
  return cudaSuccess;
}

cudaError_t device_free(void* p) {
  if (!p) return cudaSuccess;
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  auto it = r.device.find(reinterpret_cast<uintptr_t>(p));
  if (it == r.device.end() || it->second.freed) {
    raise_sticky(
        cudaErrorInvalidValue,
        "cudaFree(" + hex(reinterpret_cast<uintptr_t>(p)) + "): " +
            (it == r.device.end() ? "not the start of a device allocation" : "already freed"));
    return cudaErrorInvalidValue;
  }
  Allocation& a = it->second;
  mprotect(reinterpret_cast<void*>(a.map), a.map_len, PROT_NONE);
  a.freed = true;
  streamrace::freed(p);
  r.quarantine.push_back(a.user);
  r.quarantined += a.map_len;
  while (r.quarantined > kQuarantineBytes && !r.quarantine.empty()) {
    auto old = r.device.find(r.quarantine.front());
    r.quarantine.pop_front();
    r.quarantined -= old->second.map_len;
    munmap(reinterpret_cast<void*>(old->second.map), old->second.map_len);
    streamrace::unmapped(reinterpret_cast<void*>(old->first));
    r.device.erase(old);
  }
  return cudaSuccess;
}

cudaError_t pinned_malloc(void** out, size_t bytes) {
  *out = nullptr;
  install_fault_handler();  // the host's unsynchronised accesses are reported there
  const size_t len = round_up(bytes ? bytes : 1, page_size());
  const int fd = memfd_create("tessera-emu-pinned", MFD_CLOEXEC);
  if (fd < 0) return cudaErrorMemoryAllocation;
  void* host = MAP_FAILED;
  void* view = MAP_FAILED;
  if (ftruncate(fd, off_t(len)) == 0) {
    host = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    view = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  close(fd);
  if (host == MAP_FAILED || view == MAP_FAILED) {
    if (host != MAP_FAILED) munmap(host, len);
    if (view != MAP_FAILED) munmap(view, len);
    return cudaErrorMemoryAllocation;
  }
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  PinnedBlock& b = r.pinned[reinterpret_cast<uintptr_t>(host)];
  b.bytes = bytes;
  b.map_len = len;
  b.view = reinterpret_cast<uintptr_t>(view);
  *out = host;
  return cudaSuccess;
}

cudaError_t pinned_free(void* p) {
  if (!p) return cudaSuccess;
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  auto it = r.pinned.find(reinterpret_cast<uintptr_t>(p));
  if (it == r.pinned.end()) return cudaErrorInvalidValue;
  munmap(p, it->second.map_len);
  munmap(reinterpret_cast<void*>(it->second.view), it->second.map_len);
  r.pinned.erase(it);
  return cudaSuccess;
}

namespace {
// The pinned block whose pages hold p (registry locked).
std::map<uintptr_t, PinnedBlock>::iterator find_pinned(Registry& r, uintptr_t p) {
  auto it = r.pinned.upper_bound(p);
  if (it == r.pinned.begin()) return r.pinned.end();
  --it;
  return p < it->first + it->second.map_len ? it : r.pinned.end();
}

// Opens or closes the host's view of a block for its pending uses (registry locked).
void protect_for_uses(uintptr_t host, PinnedBlock& b) {
  int prot = PROT_READ | PROT_WRITE;
  for (const PinnedUse& u : b.uses) prot &= u.device_writes ? PROT_NONE : PROT_READ;
  if (prot == b.prot) return;
  mprotect(reinterpret_cast<void*>(host), b.map_len, prot);
  b.prot = prot;
}
}  // namespace

bool is_pinned(const void* p, size_t bytes) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto u = reinterpret_cast<uintptr_t>(p);
  auto it = find_pinned(r, u);
  return it != r.pinned.end() && u + bytes <= it->first + it->second.bytes;
}

void* stream_view(const void* p) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto u = reinterpret_cast<uintptr_t>(p);
  auto it = find_pinned(r, u);
  if (it == r.pinned.end()) return const_cast<void*>(p);
  return reinterpret_cast<void*>(it->second.view + (u - it->first));
}

void pinned_in_use(const void* p, bool device_writes, CUstream_st* s, uint64_t pos,
                   const std::string& what) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  auto it = find_pinned(r, reinterpret_cast<uintptr_t>(p));
  if (it == r.pinned.end()) return;
  it->second.uses.push_back({s, pos, device_writes, what});
  protect_for_uses(it->first, it->second);
}

void pinned_observed(CUstream_st* s, uint64_t pos) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  for (auto& [host, b] : r.pinned) {
    if (b.uses.empty()) continue;
    std::erase_if(b.uses, [&](const PinnedUse& u) { return u.stream == s && u.pos <= pos; });
    protect_for_uses(host, b);
  }
}

std::string describe_pinned_fault(const void* p, bool write) {
  Registry& r = registry();
  std::unique_lock lk(r.mu, std::try_to_lock);
  if (!lk.owns_lock()) return "";
  auto it = find_pinned(r, reinterpret_cast<uintptr_t>(p));
  if (it == r.pinned.end() || it->second.uses.empty()) return "";
  const PinnedBlock& b = it->second;
  const PinnedUse* use = &b.uses.front();
  for (const PinnedUse& u : b.uses)
    if (u.device_writes || !write) {
      use = &u;
      break;
    }
  char stream[32];
  std::snprintf(stream, sizeof stream, "%p", static_cast<void*>(use->stream));
  return std::string(write ? "host write to " : "host read of ") + "the " +
         std::to_string(b.bytes) + "-byte pinned block at " + hex(it->first) + ", which " +
         use->what + " on stream " + stream + (use->device_writes ? " writes" : " reads") +
         ", before the host synchronised with that stream (cudaStreamSynchronize, an event "
         "after the copy, or cudaDeviceSynchronize)";
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
  if (problem.empty()) {
    streamrace::access(p, bytes, access == Access::write);  // when a stream task touches it
    return;
  }
  throw DeviceFault(cudaErrorIllegalAddress,
                    what + ": " + (access == Access::write ? "write of " : "read of ") +
                        std::to_string(bytes) + " bytes at " + hex(reinterpret_cast<uintptr_t>(p)) +
                        ": " + problem);
}

void mark_block_use(void* p, size_t capacity, size_t used, cudaStream_t s) {
  if (!racecheck::enabled() || !p) return;
  resolve(s)->push_bookkeeping("caching allocator: block in use",
                               [=] { streamrace::mark_in_use(p, capacity, used); });
}

std::string describe_address(const void* p) {
  Registry& r = registry();
  std::unique_lock lk(r.mu, std::try_to_lock);
  if (!lk.owns_lock()) return "";
  return describe_locked(r, reinterpret_cast<uintptr_t>(p), 0);
}

}  // namespace tessera::emu
