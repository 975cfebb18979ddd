// Races between streams on device memory (streamrace.h). Not instrumented itself.
#include "emu/streamrace.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "emu/racecheck.h"

namespace tessera::emu::streamrace {

// For each stream, how many of its tasks come before the task (sorted by stream index; the
// task's own stream holds its own position).
using VectorClock = std::vector<std::pair<uint32_t, uint64_t>>;

struct Clock {
  uint32_t stream = 0;  // index in Registry::streams
  uint64_t pos = 0;
  VectorClock after;
  std::string what;
};

namespace {

// A task as one word: its stream's index above its position.
constexpr int kPosBits = 48;
constexpr uint64_t kPosMask = (uint64_t(1) << kPosBits) - 1;
uint64_t task_id(uint32_t stream, uint64_t pos) {
  return uint64_t(stream) << kPosBits | pos;
}

uint64_t component(const VectorClock& vc, uint32_t stream) {
  auto it = std::lower_bound(vc.begin(), vc.end(), std::make_pair(stream, uint64_t(0)));
  return it != vc.end() && it->first == stream ? it->second : 0;
}

void raise_to(VectorClock& vc, uint32_t stream, uint64_t pos) {
  auto it = std::lower_bound(vc.begin(), vc.end(), std::make_pair(stream, uint64_t(0)));
  if (it != vc.end() && it->first == stream)
    it->second = std::max(it->second, pos);
  else
    vc.insert(it, {stream, pos});
}

void join(VectorClock& into, const VectorClock& other) {
  for (const auto& [stream, pos] : other) raise_to(into, stream, pos);
}

// True when the task `id` comes before the task whose clock is `me`.
bool comes_after(const Clock& me, uint64_t id) {
  const auto stream = uint32_t(id >> kPosBits);
  const uint64_t pos = id & kPosMask;
  if (stream == me.stream) return pos <= me.pos;  // one stream runs in order
  return pos <= component(me.after, stream);
}

struct StreamInfo {
  CUstream_st* stream = nullptr;
  VectorClock last;                                          // of its latest task
  std::map<uint64_t, std::shared_ptr<const Clock>> history;  // by position
};

struct Registry {
  std::mutex mu;
  std::unordered_map<const CUstream_st*, uint32_t> index;
  std::vector<StreamInfo> streams;
  VectorClock host;  // the tasks the host has seen done
};
Registry& registry() {
  static auto* r = new Registry();  // never destroyed: stream threads may outlive main
  return *r;
}

uint32_t index_of(Registry& r, CUstream_st* s) {
  auto [it, fresh] = r.index.try_emplace(s, uint32_t(r.streams.size()));
  if (fresh) r.streams.push_back(StreamInfo{s, {}, {}});
  return it->second;
}

// The clock of the latest task at or before `pos` that was queued while the check was on.
const Clock* clock_at(const Registry& r, uint32_t stream, uint64_t pos) {
  const auto& h = r.streams[stream].history;
  auto it = h.upper_bound(pos);
  return it == h.begin() ? nullptr : std::prev(it)->second.get();
}

}  // namespace

std::shared_ptr<const Clock> queued(CUstream_st* s, uint64_t pos, const std::vector<After>& deps,
                                    const std::string& what) {
  if (!racecheck::enabled()) return nullptr;
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  auto c = std::make_shared<Clock>();
  c->stream = index_of(r, s);
  c->pos = pos;
  c->what = what;
  c->after = r.streams[c->stream].last;
  join(c->after, r.host);
  for (const After& d : deps) {
    if (!d.stream || d.pos == 0) continue;
    const uint32_t other = index_of(r, d.stream);
    if (const Clock* dc = clock_at(r, other, d.pos)) join(c->after, dc->after);
    raise_to(c->after, other, d.pos);
  }
  raise_to(c->after, c->stream, pos);
  StreamInfo& info = r.streams[c->stream];
  info.last = c->after;
  info.history[pos] = c;
  return c;
}

void host_observed(CUstream_st* s, uint64_t pos) {
  if (!racecheck::enabled() || pos == 0) return;
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const uint32_t stream = index_of(r, s);
  if (const Clock* c = clock_at(r, stream, pos)) join(r.host, c->after);
  raise_to(r.host, stream, pos);
}

// ---- shadow memory: per 4-byte word of each watched allocation, who last wrote and read it ----
namespace {

// A Lane as two words: the bytes of the word it touched (4 bits) above block + 1 (0: not a
// kernel's access, as zero pages start), and the thread, the warp epoch mod 2^16 and the epoch.
// Threads writing different bytes of one word (neighbouring 16-bit elements) do not race.
struct PackedLane {
  std::atomic<uint64_t> block{0}, rest{0};
};

struct Cell {
  std::atomic<uint64_t> writer{0}, reader{0};  // task ids; 0: none
  PackedLane writer_lane, reader_lane;         // which thread of the task, when a kernel
};

struct Shadow {
  uintptr_t begin = 0, end = 0;  // the allocation, its size rounded up to whole words
  Cell* cells = nullptr;
  // Per word, how many of its last bytes are not in use (0-4): the end of the cudaMalloc size,
  // and what mark_in_use said of caching-allocator blocks.
  std::atomic<uint8_t>* unused = nullptr;
  size_t map_len = 0, unused_len = 0, bytes = 0;
  std::mutex mu;                                          // guards blocks
  std::map<uintptr_t, std::pair<size_t, size_t>> blocks;  // marked: start -> capacity, used
};

// Address -> shadow through a two-level table of 4 KiB pages (each allocation owns its pages:
// memory.cpp maps each one separately). Readers take no lock.
constexpr unsigned kPageShift = 12, kLeafBits = 18, kRootBits = 48 - kPageShift - kLeafBits;
struct Leaf {
  std::atomic<Shadow*> page[size_t(1) << kLeafBits];
};
std::atomic<Leaf*> g_root[size_t(1) << kRootBits];

struct Watched {
  std::mutex mu;
  std::unordered_map<uintptr_t, Shadow*> live, retired;  // by the allocation's address
};
Watched& watched() {
  static auto* w = new Watched();
  return *w;
}

Shadow* lookup(uintptr_t a) {
  if (a >> 48) return nullptr;
  Leaf* leaf = g_root[a >> (kPageShift + kLeafBits)].load(std::memory_order_acquire);
  if (!leaf) return nullptr;
  return leaf->page[(a >> kPageShift) & ((size_t(1) << kLeafBits) - 1)].load(
      std::memory_order_acquire);
}

// Points the pages of [begin, end) at `s` (null to forget them); watched() locked.
void map_pages(uintptr_t begin, uintptr_t end, Shadow* s) {
  for (uintptr_t page = begin >> kPageShift; page <= (end - 1) >> kPageShift; ++page) {
    std::atomic<Leaf*>& slot = g_root[page >> kLeafBits];
    Leaf* leaf = slot.load(std::memory_order_acquire);
    if (!leaf) {
      if (!s) continue;
      leaf = new Leaf();
      slot.store(leaf, std::memory_order_release);
    }
    leaf->page[page & ((size_t(1) << kLeafBits) - 1)].store(s, std::memory_order_release);
  }
}

thread_local const Clock* t_clock = nullptr;
thread_local std::string t_report;

std::string hex(uintptr_t p) {
  char b[32];
  std::snprintf(b, sizeof b, "%#zx", size_t(p));
  return b;
}

// "N-byte device allocation at P": the size cudaMalloc was asked for.
std::string allocation_name(const Shadow& s) {
  return std::to_string(s.bytes) + "-byte device allocation at " + hex(s.begin);
}

void report(const Shadow& s, size_t word, bool write, uint64_t other, bool other_wrote) {
  if (!t_report.empty()) return;
  std::string other_what = "a task", other_stream = "?";
  {
    Registry& r = registry();
    std::lock_guard lk(r.mu);
    const auto stream = uint32_t(other >> kPosBits);
    if (stream < r.streams.size()) {
      char b[32];
      std::snprintf(b, sizeof b, "%p", static_cast<void*>(r.streams[stream].stream));
      other_stream = b;
      const auto& h = r.streams[stream].history;
      if (auto it = h.find(other & kPosMask); it != h.end()) other_what = it->second->what;
    }
  }
  const size_t offset = word * 4;
  t_report = std::string("race between streams on device memory: it ") +
             (write ? "writes" : "reads") + " bytes " + std::to_string(offset) + "-" +
             std::to_string(offset + 3) + " of the " + allocation_name(s) + ", which " +
             other_what + " on stream " + other_stream + (other_wrote ? " wrote" : " read") +
             ", and no event wait, default-stream ordering or host synchronisation puts one "
             "after the other";
}

// Why the bytes [a, a + n) of the watched allocation s, of which `bad` is the first not in use,
// may not be touched.
std::string describe_unused(Shadow& s, uintptr_t a, size_t n, uintptr_t bad, bool write) {
  std::string what = std::string("invalid memory access: it ") + (write ? "writes " : "reads ") +
                     std::to_string(n) + " bytes at " + hex(a) + ", ";
  const std::string alloc = allocation_name(s);
  if (bad < s.begin) return what + std::to_string(s.begin - bad) + " bytes before a " + alloc;
  {
    std::lock_guard lk(s.mu);
    auto it = s.blocks.upper_bound(bad);
    if (it != s.blocks.begin()) {
      const auto& [start, use] = *std::prev(it);
      const auto [capacity, used] = use;
      if (bad < start + capacity) {
        const std::string block = std::to_string(capacity) +
                                  "-byte block of the caching allocator at " + hex(start) +
                                  " (in a " + alloc + ")";
        if (used == 0) return what + "inside a free " + block;
        return what + std::to_string(bad - (start + used)) + " bytes past the " +
               std::to_string(used) + " bytes in use of a " + block;
      }
    }
  }
  return what + std::to_string(bad - (s.begin + s.bytes)) + " bytes past the end of a " + alloc +
         " (inside the rounding of its size)";
}

// The first byte of [lo, hi) (inside s) that is not in use, or 0.
uintptr_t first_unused(const Shadow& s, uintptr_t lo, uintptr_t hi) {
  if (!s.unused) return 0;
  for (size_t word = (lo - s.begin) / 4; word <= (hi - 1 - s.begin) / 4; ++word) {
    const uint8_t u = s.unused[word].load(std::memory_order_relaxed);
    if (u == 0) continue;
    const uintptr_t in_use_end = s.begin + word * 4 + 4 - u;
    if (hi > in_use_end) return std::max(lo, in_use_end);
  }
  return 0;
}

constexpr int kMaskShift = 60;
constexpr uint64_t kBlockMask = (uint64_t(1) << kMaskShift) - 1;

void store(PackedLane& to, const Lane* l, unsigned bytes) {
  to.block.store(l ? uint64_t(bytes) << kMaskShift | (l->block + 1) : 0, std::memory_order_relaxed);
  to.rest.store(
      l ? uint64_t(l->thread) << 48 | uint64_t(l->warp_epoch & 0xffff) << 32 | l->epoch : 0,
      std::memory_order_relaxed);
}

// Whether the access `other` (of this launch) comes before the running thread's `me`, which
// touches `bytes` of the word (or touches other bytes).
bool ordered_in_launch(const PackedLane& other, const Lane& me, unsigned bytes) {
  const uint64_t packed = other.block.load(std::memory_order_relaxed);
  if (packed == 0 || !((packed >> kMaskShift) & bytes)) return true;  // not a kernel's; apart
  if ((packed & kBlockMask) != me.block + 1) return false;  // another block: nothing orders them
  const uint64_t rest = other.rest.load(std::memory_order_relaxed);
  const auto thread = uint32_t(rest >> 48);
  if (thread == me.thread || uint32_t(rest) != me.epoch) return true;  // or a __syncthreads
  return thread / 32 == me.thread / 32 && uint32_t(rest >> 32 & 0xffff) != (me.warp_epoch & 0xffff);
}

void report_in_launch(const Shadow& s, size_t word, bool write, const PackedLane& other,
                      bool other_wrote, const Lane& me, std::string& out) {
  if (!out.empty()) return;
  const uint64_t block = (other.block.load(std::memory_order_relaxed) & kBlockMask) - 1;
  const auto thread = uint32_t(other.rest.load(std::memory_order_relaxed) >> 48);
  const size_t offset = word * 4;
  out = std::string("race on global memory within the launch: it ") + (write ? "writes" : "reads") +
        " bytes " + std::to_string(offset) + "-" + std::to_string(offset + 3) + " of the " +
        allocation_name(s) + ", which block (" + index_name(block, me.grid) + "), thread (" +
        index_name(thread, me.block_dim) + ")" + (other_wrote ? " wrote" : " read") +
        ", and nothing orders them (threads of different blocks never are within a launch; "
        "threads of one block are by a __syncthreads between them)";
}

// `bytes`: which of the word's 4 bytes the access touches (a bit each).
void check_word(const Clock& me, const Shadow& s, size_t word, unsigned bytes, bool write,
                const Lane* lane, std::string* kernel_report) {
  Cell& cell = s.cells[word];
  const uint64_t mine = task_id(me.stream, me.pos);
  const uint64_t w = cell.writer.load(std::memory_order_relaxed);
  if (w != 0 && w != mine && !comes_after(me, w)) return report(s, word, write, w, true);
  const uint64_t r = cell.reader.load(std::memory_order_relaxed);
  if (write && r != 0 && r != mine && !comes_after(me, r)) return report(s, word, true, r, false);
  if (lane && kernel_report) {  // against the launch's other threads
    if (w == mine && !ordered_in_launch(cell.writer_lane, *lane, bytes))
      return report_in_launch(s, word, write, cell.writer_lane, true, *lane, *kernel_report);
    if (write && r == mine && !ordered_in_launch(cell.reader_lane, *lane, bytes))
      return report_in_launch(s, word, true, cell.reader_lane, false, *lane, *kernel_report);
  }
  if (write) {
    if (w != mine) cell.writer.store(mine, std::memory_order_relaxed);
    store(cell.writer_lane, lane, bytes);
    if (r != 0) cell.reader.store(0, std::memory_order_relaxed);  // ordered before this write
  } else if (r != mine && (r == 0 || comes_after(me, r))) {
    // An earlier reader this one does not come after stays: a later write must come after it.
    cell.reader.store(mine, std::memory_order_relaxed);
    store(cell.reader_lane, lane, bytes);
  } else if (r == mine && lane && ordered_in_launch(cell.reader_lane, *lane, 0xf)) {
    store(cell.reader_lane, lane, bytes);  // likewise within the launch
  }
}

}  // namespace

std::string index_name(uint64_t linear, dim3 d) {
  return std::to_string(linear % d.x) + ", " + std::to_string(linear / d.x % d.y) + ", " +
         std::to_string(linear / (uint64_t(d.x) * d.y));
}

void begin_task(const Clock* clock) {
  t_clock = clock;
  t_report.clear();
}

std::string end_task() {
  t_clock = nullptr;
  return std::exchange(t_report, {});
}

void access(const void* p, size_t bytes, bool write, std::string* kernel_report, const Lane* lane) {
  const Clock* me = t_clock;
  if (!me || bytes == 0) return;
  const auto start = reinterpret_cast<uintptr_t>(p);
  uintptr_t a = start;
  const uintptr_t end = a + bytes;
  while (a < end) {
    const uintptr_t next_page = ((a >> kPageShift) + 1) << kPageShift;
    Shadow* s = lookup(a);
    if (!s) {
      a = next_page;
      continue;
    }
    // The allocation's pages hold bytes outside it: before its start and past its end.
    const uintptr_t lo = std::max(a, s->begin), hi = std::min(end, s->end);
    uintptr_t bad = a < s->begin ? a : lo < hi ? first_unused(*s, lo, hi) : 0;
    if (!bad && end > s->end && s->end < next_page) bad = std::max(a, s->end);
    if (bad) {
      std::string& out = kernel_report ? *kernel_report : t_report;
      if (out.empty()) out = describe_unused(*s, start, bytes, bad, write);
    }
    if (lo < hi)
      for (size_t word = (lo - s->begin) / 4; word <= (hi - 1 - s->begin) / 4; ++word) {
        const uintptr_t w0 = s->begin + word * 4;
        const uintptr_t b0 = std::max(lo, w0) - w0, b1 = std::min(hi, w0 + 4) - w0;
        check_word(*me, *s, word, ((1u << b1) - 1) & ~((1u << b0) - 1), write, lane, kernel_report);
      }
    a = std::max(lo < hi ? hi : a, next_page);
  }
}

void mark_in_use(const void* p, size_t capacity, size_t used) {
  const auto start = reinterpret_cast<uintptr_t>(p);
  Shadow* s = lookup(start);
  if (!s || !s->unused || start < s->begin || start + capacity > s->begin + s->bytes) return;
  size_t before = capacity;  // a block not marked before is in use to its end
  {
    std::lock_guard lk(s->mu);
    auto [it, fresh] = s->blocks.try_emplace(start, capacity, used);
    if (!fresh) before = std::exchange(it->second, {capacity, used}).second;
  }
  // Only the words between the old and the new end of what is in use change.
  const size_t lo = std::min(before, used) / 4, hi = (std::max(before, used) + 3) / 4;
  const size_t first = (start - s->begin) / 4;
  for (size_t w = lo; w < hi; ++w) {
    const size_t in_use = used >= 4 * w + 4 ? 4 : used > 4 * w ? used - 4 * w : 0;
    s->unused[first + w].store(uint8_t(4 - in_use), std::memory_order_relaxed);
  }
}

void allocated(const void* user, size_t bytes) {
  if (!racecheck::enabled() || bytes == 0) return;
  auto* s = new Shadow();
  s->begin = reinterpret_cast<uintptr_t>(user);
  s->end = s->begin + (bytes + 3) / 4 * 4;
  s->map_len = (s->end - s->begin) / 4 * sizeof(Cell);
  void* m = mmap(nullptr, s->map_len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {  // unwatched rather than failing the allocation
    delete s;
    return;
  }
  s->cells = static_cast<Cell*>(m);  // zero pages: every Cell starts as {0, 0}
  s->bytes = bytes;
  s->unused_len = (s->end - s->begin) / 4;
  void* u = mmap(nullptr, s->unused_len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (u != MAP_FAILED) {  // zero pages: every byte in use; then the cudaMalloc size's end
    s->unused = static_cast<std::atomic<uint8_t>*>(u);
    if (bytes % 4) s->unused[bytes / 4].store(uint8_t(4 - bytes % 4), std::memory_order_relaxed);
  }
  Watched& w = watched();
  std::lock_guard lk(w.mu);
  w.live[s->begin] = s;
  map_pages(s->begin, s->end, s);
}

void freed(const void* user) {
  Watched& w = watched();
  std::lock_guard lk(w.mu);
  auto it = w.live.find(reinterpret_cast<uintptr_t>(user));
  if (it == w.live.end()) return;
  map_pages(it->second->begin, it->second->end, nullptr);
  w.retired[it->first] = it->second;  // a task may still hold it until the mapping goes
  w.live.erase(it);
}

void unmapped(const void* user) {
  Watched& w = watched();
  std::lock_guard lk(w.mu);
  auto it = w.retired.find(reinterpret_cast<uintptr_t>(user));
  if (it == w.retired.end()) return;
  munmap(it->second->cells, it->second->map_len);
  if (it->second->unused) munmap(it->second->unused, it->second->unused_len);
  delete it->second;
  w.retired.erase(it);
}

}  // namespace tessera::emu::streamrace
