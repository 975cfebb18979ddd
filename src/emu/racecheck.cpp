// Shared-memory race detection (racecheck.h), and the ThreadSanitizer entry points that the
// instrumented code calls. This file itself is not instrumented.
#include "emu/racecheck.h"

#include <cxxabi.h>
#include <elf.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "emu/kernel.h"  // blockIdx, gridDim
#include "emu/streamrace.h"

namespace tessera::emu::racecheck {
namespace {

constexpr uint16_t kNobody = 0xffff;

// What one byte of shared memory remembers within the current epoch (the accesses since the
// last __syncthreads). Two readers are kept: the first, and the latest other one; a race with a
// reader in between is missed (never a false report).
struct Cell {
  uint32_t epoch = 0;
  uint16_t writer = kNobody, reader = kNobody, other_reader = kNobody;
  uint32_t writer_warp_epoch = 0, reader_warp_epoch = 0, other_reader_warp_epoch = 0;
  const void* writer_pc = nullptr;
};

// One stretch of memory that is shared by the block's threads.
struct Region {
  uintptr_t begin = 0, end = 0;
  bool dynamic = false;  // the dynamic buffer; otherwise a module's thread-local block
  std::vector<Cell> cells;
};

struct State {
  std::vector<Region> regions;  // [0] is the dynamic buffer
  dim3 block{};
  uint32_t epoch = 1;
  std::vector<uint32_t> warp_epoch;
  unsigned thread = 0;
  std::string report;
};

thread_local State* t_state = nullptr;  // non-null while a checked grid runs on this thread

// The static __shared__ variables are thread-local (kernel.h): the thread-local blocks of the
// loaded modules, as this host thread sees them.
std::vector<Region> thread_local_blocks() {
  std::vector<Region> out;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        if (!info->dlpi_tls_data) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_TLS || ph.p_memsz == 0) continue;
          Region r;
          r.begin = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
          r.end = r.begin + ph.p_memsz;
          static_cast<std::vector<Region>*>(data)->push_back(std::move(r));
        }
        return 0;
      },
      &out);
  return out;
}

// ---- naming what raced: the executable's symbol table ----
struct Symbol {
  uint64_t value, size;
  std::string name;
};

struct Symbols {
  std::vector<Symbol> functions, thread_locals;  // sorted by value
  uintptr_t load_bias = 0;
  uintptr_t tls_block = 0;  // this thread's instance of the executable's thread-local block
};

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> d(
      abi::__cxa_demangle(name, nullptr, nullptr, &status), &std::free);
  return status == 0 && d ? std::string(d.get()) : std::string(name);
}

// Reads .symtab of /proc/self/exe (a report is rare; the file is read once per report).
Symbols read_symbols() {
  Symbols s;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto& syms = *static_cast<Symbols*>(data);
        syms.load_bias = info->dlpi_addr;  // the first module is the executable
        syms.tls_block = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
        return 1;
      },
      &s);
  std::ifstream f("/proc/self/exe", std::ios::binary | std::ios::ate);
  std::vector<char> bytes(f ? size_t(f.tellg()) : 0);
  f.seekg(0);
  f.read(bytes.data(), std::streamsize(bytes.size()));
  if (bytes.size() < sizeof(ElfW(Ehdr))) return s;
  ElfW(Ehdr) eh;
  std::memcpy(&eh, bytes.data(), sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_shoff + uint64_t(eh.e_shnum) * sizeof(ElfW(Shdr)) > bytes.size())
    return s;
  std::vector<ElfW(Shdr)> sh(eh.e_shnum);
  std::memcpy(sh.data(), bytes.data() + eh.e_shoff, sh.size() * sizeof(ElfW(Shdr)));
  for (const ElfW(Shdr) & sec : sh) {
    if (sec.sh_type != SHT_SYMTAB || sec.sh_link >= sh.size()) continue;
    const ElfW(Shdr)& strtab = sh[sec.sh_link];
    if (sec.sh_offset + sec.sh_size > bytes.size() ||
        strtab.sh_offset + strtab.sh_size > bytes.size())
      continue;
    for (size_t off = 0; off + sizeof(ElfW(Sym)) <= sec.sh_size; off += sizeof(ElfW(Sym))) {
      ElfW(Sym) sym;
      std::memcpy(&sym, bytes.data() + sec.sh_offset + off, sizeof sym);
      if (sym.st_name >= strtab.sh_size) continue;
      const char* name = bytes.data() + strtab.sh_offset + sym.st_name;
      const int type = ELF64_ST_TYPE(sym.st_info);
      if (type == STT_FUNC && sym.st_value != 0)
        s.functions.push_back({sym.st_value, sym.st_size, name});
      else if (type == STT_TLS)
        s.thread_locals.push_back({sym.st_value, sym.st_size, name});
    }
  }
  const auto by_value = [](const Symbol& a, const Symbol& b) { return a.value < b.value; };
  std::sort(s.functions.begin(), s.functions.end(), by_value);
  std::sort(s.thread_locals.begin(), s.thread_locals.end(), by_value);
  return s;
}

const Symbol* containing(const std::vector<Symbol>& syms, uint64_t v) {
  auto it = std::upper_bound(syms.begin(), syms.end(), v,
                             [](uint64_t x, const Symbol& s) { return x < s.value; });
  if (it == syms.begin()) return nullptr;
  --it;
  return v < it->value + std::max<uint64_t>(it->size, 1) ? &*it : nullptr;
}

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// "instruction at 0x36d61 (in f(float*))": the offset in the executable (for addr2line or
// objdump) and the function, unless the kernel was inlined into its launch (the report already
// names the kernel).
std::string describe_pc(const Symbols& s, const void* pc) {
  const uint64_t rel = reinterpret_cast<uintptr_t>(pc) - s.load_bias;
  std::string out = "instruction at " + hex(rel);
  if (const Symbol* f = containing(s.functions, rel)) {
    const std::string name = demangle(f->name.c_str());
    if (name.find("tessera::cuda::launch<") == std::string::npos) out += " in " + name;
  }
  return out;
}

std::string describe_byte(const Symbols& s, const Region& r, uintptr_t addr) {
  if (r.dynamic) return "byte " + std::to_string(addr - r.begin) + " of dynamic shared memory";
  if (r.begin == s.tls_block) {
    if (const Symbol* v = containing(s.thread_locals, addr - s.tls_block))
      return "byte " + std::to_string(addr - s.tls_block - v->value) + " of __shared__ " +
             demangle(v->name.c_str());
  }
  return "static shared memory at " + hex(addr);
}

std::string thread_name(unsigned linear, dim3 b) {
  return "thread (" + streamrace::index_name(linear, b) + ")";
}

// ---- the check ----
bool ordered(const State& s, uint16_t other, uint32_t other_warp_epoch) {
  if (other == s.thread) return true;
  const unsigned warp = s.thread / 32;
  return other / 32 == warp && s.warp_epoch[warp] != other_warp_epoch;
}

void report(State& s, const Region& r, uintptr_t addr, bool write, uint16_t other, bool other_wrote,
            const void* pc, const void* other_pc) {
  if (!s.report.empty()) return;
  const Symbols syms = read_symbols();
  s.report = std::string("race on shared memory: it ") + (write ? "writes " : "reads ") +
             describe_byte(syms, r, addr) + ", which " + thread_name(other, s.block) +
             (other_wrote ? " wrote" : " read") + " with no barrier between them (" +
             describe_pc(syms, pc);
  if (other_pc) s.report += "; the write: " + describe_pc(syms, other_pc);
  s.report += "; offsets in the executable)";
}

void access_byte(State& s, Region& r, uintptr_t addr, bool write, const void* pc) {
  Cell& c = r.cells[addr - r.begin];
  if (c.epoch != s.epoch) c = Cell{s.epoch};
  const uint16_t me = static_cast<uint16_t>(s.thread);
  const uint32_t my_warp_epoch = s.warp_epoch[s.thread / 32];
  if (c.writer != kNobody && !ordered(s, c.writer, c.writer_warp_epoch))
    return report(s, r, addr, write, c.writer, true, pc, c.writer_pc);
  if (write) {
    if (c.reader != kNobody && !ordered(s, c.reader, c.reader_warp_epoch))
      return report(s, r, addr, true, c.reader, false, pc, nullptr);
    if (c.other_reader != kNobody && !ordered(s, c.other_reader, c.other_reader_warp_epoch))
      return report(s, r, addr, true, c.other_reader, false, pc, nullptr);
    c.writer = me;
    c.writer_warp_epoch = my_warp_epoch;
    c.writer_pc = pc;
    c.reader = c.other_reader = kNobody;
  } else if (c.reader == kNobody || c.reader == me) {
    c.reader = me;
    c.reader_warp_epoch = my_warp_epoch;
  } else {
    c.other_reader = me;
    c.other_reader_warp_epoch = my_warp_epoch;
  }
}

inline void access(const void* p, size_t bytes, bool write, const void* pc) {
  // Device memory: bytes in use, races against other streams' tasks and within the launch.
  State* s = t_state;
  if (!s) return streamrace::access(p, bytes, write);
  std::string found;
  streamrace::Lane lane;
  lane.block = blockIdx.x + uint64_t(gridDim.x) * (blockIdx.y + uint64_t(gridDim.y) * blockIdx.z);
  lane.thread = s->thread;
  lane.epoch = s->epoch;
  lane.warp_epoch = s->warp_epoch[s->thread / 32];
  lane.grid = gridDim;
  lane.block_dim = s->block;
  streamrace::access(p, bytes, write, &found, &lane);
  if (!found.empty() && s->report.empty()) s->report = found;
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (Region& r : s->regions) {
    if (a >= r.end || a + bytes <= r.begin) continue;
    const uintptr_t lo = std::max(a, r.begin), hi = std::min(a + bytes, r.end);
    for (uintptr_t b = lo; b < hi; ++b) access_byte(*s, r, b, write, pc);
    return;
  }
}

}  // namespace

namespace {
std::atomic<bool>& switched_on() {
  static std::atomic<bool> on = [] {
    const char* e = std::getenv("TESSERA_EMU_RACECHECK");
    return e && std::strcmp(e, "1") == 0;
  }();
  return on;
}
}  // namespace

bool enabled() {
  return switched_on().load();
}
void set_enabled(bool on) {
  switched_on().store(on);
}

void begin_grid(const void* dynamic_base, size_t dynamic_bytes, dim3 block) {
  if (!enabled()) return;
  thread_local State state;
  thread_local bool regions_known = false;
  if (!regions_known) {
    state.regions.resize(1);
    state.regions[0].dynamic = true;
    for (Region& r : thread_local_blocks()) {
      r.cells.resize(r.end - r.begin);
      state.regions.push_back(std::move(r));
    }
    regions_known = true;
  }
  Region& dyn = state.regions[0];
  dyn.begin = reinterpret_cast<uintptr_t>(dynamic_base);
  dyn.end = dyn.begin + dynamic_bytes;
  if (dyn.cells.size() < dynamic_bytes) dyn.cells.resize(dynamic_bytes);
  state.block = block;
  state.warp_epoch.assign((block.x * block.y * block.z + 31) / 32, 0);
  state.thread = 0;
  state.report.clear();
  t_state = &state;
}

void block_barrier() {
  if (t_state && ++t_state->epoch == 0) {  // wrapped: forget every cell rather than misread one
    for (Region& r : t_state->regions) std::fill(r.cells.begin(), r.cells.end(), Cell{});
    t_state->epoch = 1;
  }
}

void warp_barrier(unsigned warp) {
  if (t_state) ++t_state->warp_epoch[warp];
}

void set_thread(unsigned linear) {
  if (t_state) t_state->thread = linear;
}

void end_grid() {
  t_state = nullptr;
}

std::string take_report() {
  if (!t_state || t_state->report.empty()) return {};
  return std::exchange(t_state->report, {});
}

}  // namespace tessera::emu::racecheck

// ---- ThreadSanitizer's entry points (GCC's -fsanitize=thread) ----
// Plain loads and stores go to the check; atomics are performed (sequentially consistent, at
// least as strong as asked) and not checked: atomics never race.
using tessera::emu::racecheck::access;  // NOLINT

#define TS_PC __builtin_return_address(0)
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}

#define TS_ACCESS(n)                                 \
  void __tsan_read##n(void* p) {                     \
    access(p, n, false, TS_PC);                      \
  }                                                  \
  void __tsan_write##n(void* p) {                    \
    access(p, n, true, TS_PC);                       \
  }                                                  \
  void __tsan_unaligned_read##n(void* p) {           \
    access(p, n, false, TS_PC);                      \
  }                                                  \
  void __tsan_unaligned_write##n(void* p) {          \
    access(p, n, true, TS_PC);                       \
  }                                                  \
  void __tsan_volatile_read##n(void* p) {            \
    access(p, n, false, TS_PC);                      \
  }                                                  \
  void __tsan_volatile_write##n(void* p) {           \
    access(p, n, true, TS_PC);                       \
  }                                                  \
  void __tsan_unaligned_volatile_read##n(void* p) {  \
    access(p, n, false, TS_PC);                      \
  }                                                  \
  void __tsan_unaligned_volatile_write##n(void* p) { \
    access(p, n, true, TS_PC);                       \
  }
TS_ACCESS(1)
TS_ACCESS(2)
TS_ACCESS(4)
TS_ACCESS(8)
TS_ACCESS(16)
#undef TS_ACCESS
void __tsan_read_range(void* p, unsigned long n) {
  access(p, n, false, TS_PC);
}
void __tsan_write_range(void* p, unsigned long n) {
  access(p, n, true, TS_PC);
}

#define TS_ATOMIC(bits)                                                                            \
  using a##bits = uint##bits##_t;                                                                  \
  a##bits __tsan_atomic##bits##_load(const volatile a##bits* a, int) {                             \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                   \
  }                                                                                                \
  void __tsan_atomic##bits##_store(volatile a##bits* a, a##bits v, int) {                          \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_exchange(volatile a##bits* a, a##bits v, int) {                    \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                            \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_fetch_add(volatile a##bits* a, a##bits v, int) {                   \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                             \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_fetch_sub(volatile a##bits* a, a##bits v, int) {                   \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                             \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_fetch_and(volatile a##bits* a, a##bits v, int) {                   \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                             \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_fetch_or(volatile a##bits* a, a##bits v, int) {                    \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                              \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_fetch_xor(volatile a##bits* a, a##bits v, int) {                   \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                             \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_fetch_nand(volatile a##bits* a, a##bits v, int) {                  \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                            \
  }                                                                                                \
  int __tsan_atomic##bits##_compare_exchange_strong(volatile a##bits* a, a##bits* c, a##bits v,    \
                                                    int, int) {                                    \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);        \
  }                                                                                                \
  int __tsan_atomic##bits##_compare_exchange_weak(volatile a##bits* a, a##bits* c, a##bits v, int, \
                                                  int) {                                           \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);         \
  }                                                                                                \
  a##bits __tsan_atomic##bits##_compare_exchange_val(volatile a##bits* a, a##bits c, a##bits v,    \
                                                     int, int) {                                   \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);              \
    return c;                                                                                      \
  }
TS_ATOMIC(8)
TS_ATOMIC(16)
TS_ATOMIC(32)
TS_ATOMIC(64)
#undef TS_ATOMIC
void __tsan_atomic_thread_fence(int) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
void __tsan_atomic_signal_fence(int) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
}  // extern "C"
