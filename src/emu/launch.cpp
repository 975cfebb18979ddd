// The kernel executor of the emulated device (kernel.h describes the execution model).
#include <signal.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "emu/device.h"
#include "emu/fiber.h"
#include "emu/kernel.h"
#include "emu/memory.h"
#include "emu/racecheck.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace tessera::emu {
namespace {

enum class State { runnable, at_block, at_warp, done };

struct Thread {
  Context ctx;
  State state = State::runnable;
  bool fenced = false;  // waits at __syncwarp, not at a shuffle or vote
  uint3 idx{};
};

// What a host thread needs to run blocks; kept between launches (stacks are costly to map).
struct Executor {
  std::vector<std::unique_ptr<FiberStack>> stacks;
  std::vector<Thread> threads;
  std::vector<uint64_t> exchange;
  std::vector<unsigned char> shared;  // dynamic shared memory, 128-byte aligned inside
  void* shared_base = nullptr;
  Context scheduler;
  unsigned current = 0;
  bool running = false;
  const std::function<void()>* body = nullptr;
  std::string kernel;
  std::string fault;
  cudaError_t fault_code = cudaSuccess;
};

thread_local Executor* t_exec = nullptr;

size_t stack_bytes() {
  static const size_t bytes = [] {
    const char* e = std::getenv("TESSERA_EMU_STACK_KB");
    const long kb = e ? std::atol(e) : 256;
    return size_t(kb > 16 ? kb : 16) * 1024;
  }();
  return bytes;
}

std::string where(const Executor& x) {
  const uint3 t = x.threads.empty() ? uint3{} : x.threads[x.current].idx;
  char buf[160];
  std::snprintf(buf, sizeof buf, "block (%u, %u, %u), thread (%u, %u, %u)", blockIdx.x, blockIdx.y,
                blockIdx.z, t.x, t.y, t.z);
  return buf;
}

void fiber_entry() {
  Executor& x = *t_exec;
  try {
    (*x.body)();
  } catch (const DeviceFault& f) {
    if (x.fault.empty()) x.fault = where(x) + ": " + f.what(), x.fault_code = f.code();
  } catch (const std::exception& e) {
    if (x.fault.empty())
      x.fault = where(x) + ": " + e.what(), x.fault_code = cudaErrorLaunchFailure;
  }
  x.threads[x.current].state = State::done;
  switch_context(x.threads[x.current].ctx, x.scheduler);
  std::abort();  // a finished fiber is never resumed
}

void suspend(State s, bool fenced = false) {
  Executor& x = *t_exec;
  if (!x.running) throw DeviceFault(cudaErrorLaunchFailure, "a barrier outside a kernel");
  Thread& t = x.threads[x.current];
  t.state = s;
  t.fenced = fenced;
  switch_context(t.ctx, x.scheduler);
}

// Releases every barrier whose threads have all arrived; false when none could be.
bool release_barriers(Executor& x, unsigned n) {
  bool released = false;
  for (unsigned w = 0; w < n; w += 32) {
    const unsigned end = std::min(n, w + 32);
    unsigned live = 0, waiting = 0, fenced = 0;
    for (unsigned i = w; i < end; ++i) {
      live += x.threads[i].state != State::done;
      waiting += x.threads[i].state == State::at_warp;
      fenced += x.threads[i].state == State::at_warp && x.threads[i].fenced;
    }
    if (live == 0 || waiting != live) continue;
    for (unsigned i = w; i < end; ++i)
      if (x.threads[i].state == State::at_warp) x.threads[i].state = State::runnable;
    if (fenced == live) racecheck::warp_barrier(w / 32);
    released = true;
  }
  if (released) return true;
  unsigned live = 0, waiting = 0;
  for (unsigned i = 0; i < n; ++i) {
    live += x.threads[i].state != State::done;
    waiting += x.threads[i].state == State::at_block;
  }
  if (live == 0 || waiting != live) return false;
  for (unsigned i = 0; i < n; ++i)
    if (x.threads[i].state == State::at_block) x.threads[i].state = State::runnable;
  racecheck::block_barrier();
  return true;
}

std::string deadlock_report(const Executor& x, unsigned n) {
  std::string s = "barrier deadlock: ";
  unsigned shown = 0;
  for (unsigned i = 0; i < n && shown < 8; ++i) {
    const State st = x.threads[i].state;
    if (st == State::done) continue;
    const bool first_of_kind = i == 0 || x.threads[i - 1].state != st;
    if (!first_of_kind) continue;
    s += "thread " + std::to_string(i) +
         (st == State::at_block ? " waits at __syncthreads; " : " waits at a warp barrier; ");
    ++shown;
  }
  return s + "the others of its block or warp have returned or wait elsewhere";
}

// The order in which a block's runnable threads run between two barriers. Forward by default;
// TESSERA_EMU_SCHEDULE=reverse or =shuffle:SEED run them in another order, so a kernel that reads
// shared memory another thread writes without a barrier in between (a race on a GPU) computes
// something else, and its comparison with the CPU fails. CI runs the kernel tests both ways.
struct Schedule {
  enum Kind { forward, reverse, shuffle } kind = forward;
  uint64_t seed = 0;
};

Schedule schedule() {
  static const Schedule s = [] {
    Schedule r;
    const char* e = std::getenv("TESSERA_EMU_SCHEDULE");
    if (!e || !*e || std::strcmp(e, "forward") == 0) return r;
    if (std::strcmp(e, "reverse") == 0) {
      r.kind = Schedule::reverse;
    } else if (std::strncmp(e, "shuffle:", 8) == 0) {
      r.kind = Schedule::shuffle;
      r.seed = std::strtoull(e + 8, nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "tessera emulated device: TESSERA_EMU_SCHEDULE=%s: expected forward, reverse "
                   "or shuffle:SEED\n",
                   e);
      std::abort();
    }
    return r;
  }();
  return s;
}

// The k-th thread to run in this round: a bijection of [0, n) per round (an affine map with a
// multiplier coprime to n for shuffle, drawn from the seed, the block and the round).
unsigned thread_in_order(const Schedule& s, unsigned k, unsigned n, uint64_t round) {
  if (s.kind == Schedule::forward) return k;
  if (s.kind == Schedule::reverse) return n - 1 - k;
  uint64_t h = s.seed ^ (uint64_t(blockIdx.x) << 32) ^ (uint64_t(blockIdx.y) << 16) ^ round;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  h ^= h >> 31;
  uint64_t a = (h % n) | 1;
  while (std::gcd(a, uint64_t(n)) != 1) a += 2;
  return unsigned((a * k + (h >> 20)) % n);
}

void run_block(Executor& x, unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
    make_context(x.threads[i].ctx, *x.stacks[i], fiber_entry);
    x.threads[i].state = State::runnable;
  }
  unsigned live = n;
  racecheck::block_barrier();  // nothing of the previous block's is visible as this block's
  const Schedule order = schedule();
  for (uint64_t round = 0;; ++round) {
    for (unsigned k = 0; k < n; ++k) {
      const unsigned i = thread_in_order(order, k, n, round);
      if (x.threads[i].state != State::runnable) continue;
      x.current = i;
      threadIdx = x.threads[i].idx;
      racecheck::set_thread(i);
      switch_context(x.scheduler, x.threads[i].ctx);
      if (x.fault.empty())
        if (std::string race = racecheck::take_report(); !race.empty())
          x.fault = where(x) + ": " + race, x.fault_code = cudaErrorLaunchFailure;
      if (!x.fault.empty()) throw DeviceFault(x.fault_code, "kernel " + x.kernel + ", " + x.fault);
      live -= x.threads[i].state == State::done;
    }
    if (live == 0) return;
    if (!release_barriers(x, n))
      throw DeviceFault(cudaErrorLaunchFailure,
                        "kernel " + x.kernel + ", block (" + std::to_string(blockIdx.x) + ", " +
                            std::to_string(blockIdx.y) + ", " + std::to_string(blockIdx.z) +
                            "): " + deadlock_report(x, n));
  }
}

// Faults in kernels: an access to a guard page (past a device allocation, or a freed one, or
// below a fiber's stack) is reported with the kernel, block and thread, then the process
// aborts, as compute-sanitizer would stop it. Other faults go to the previous handler.
struct sigaction g_previous_segv;

void on_segv(int sig, siginfo_t* info, void* ctx) {
  Executor* x = t_exec;
  if (x && x->running) {
    std::string what = describe_address(info->si_addr);
    if (what.empty() && x->stacks[x->current]->contains_guard(info->si_addr))
      what = "stack overflow (TESSERA_EMU_STACK_KB sets the stack size)";
    if (what.empty()) what = "not device memory";
    std::fprintf(stderr,
                 "tessera emulated device: invalid memory access in kernel %s, %s: address %p: "
                 "%s\n",
                 x->kernel.c_str(), where(*x).c_str(), info->si_addr, what.c_str());
    std::fflush(stderr);
    signal(SIGABRT, SIG_DFL);
    std::abort();
  }
  // Error code bit 1: the access was a write (x86-64).
  const bool write = (static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
  if (const std::string why = describe_pinned_fault(info->si_addr, write); !why.empty()) {
    std::fprintf(stderr, "tessera emulated device: unsynchronised %s at address %p: %s\n",
                 write ? "write" : "read", info->si_addr, why.c_str());
    std::fflush(stderr);
    signal(SIGABRT, SIG_DFL);
    std::abort();
  }
  if (g_previous_segv.sa_flags & SA_SIGINFO) {
    if (g_previous_segv.sa_sigaction) return g_previous_segv.sa_sigaction(sig, info, ctx);
  } else if (g_previous_segv.sa_handler != SIG_IGN && g_previous_segv.sa_handler != SIG_DFL) {
    return g_previous_segv.sa_handler(sig);
  }
  signal(SIGSEGV, SIG_DFL);  // returning re-runs the access, which now ends the process
}

}  // namespace

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
    sigaction(SIGBUS, &sa, nullptr);
  });
  // The handler must run on its own stack: the fault may be a fiber's stack overflow.
  thread_local std::vector<char> alt(64 * 1024);
  thread_local bool set = false;
  if (!set) {
    stack_t st{};
    st.ss_sp = alt.data();
    st.ss_size = alt.size();
    sigaltstack(&st, nullptr);
    set = true;
  }
}

namespace {

Executor& executor(unsigned threads, size_t smem) {
  thread_local Executor x;
  while (x.stacks.size() < threads) x.stacks.push_back(std::make_unique<FiberStack>(stack_bytes()));
  if (x.threads.size() < threads) x.threads.resize(threads);
  if (x.exchange.size() < threads) x.exchange.resize(threads);
  if (x.shared.size() < smem + 128) x.shared.resize(smem + 128);
  const auto base = reinterpret_cast<uintptr_t>(x.shared.data());
  x.shared_base = reinterpret_cast<void*>((base + 127) & ~uintptr_t(127));
  return x;
}

void run_grid(const std::string& name, dim3 grid, dim3 block, size_t smem,
              const std::function<void()>& body) {
  install_fault_handler();
  const unsigned n = block.x * block.y * block.z;
  Executor& x = executor(n, smem);
  x.kernel = name;
  x.body = &body;
  x.fault.clear();
  for (unsigned i = 0; i < n; ++i)
    x.threads[i].idx = uint3{i % block.x, i / block.x % block.y, i / (block.x * block.y)};
  gridDim = grid;
  blockDim = block;
  t_exec = &x;
  x.running = true;
  racecheck::begin_grid(x.shared_base, smem, block);
  struct Done {
    Executor& x;
    ~Done() {
      x.running = false;
      racecheck::end_grid();
    }
  } done{x};
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = uint3{bx, y, z};
        std::memset(x.shared_base, 0xff, smem);
        run_block(x, n);
      }
}

bool valid_config(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  return threads >= 1 && threads <= uint64_t(kMaxThreadsPerBlock) && block.x <= 1024 &&
         block.y <= 1024 && block.z <= 64 && grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 &&
         grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535;
}

}  // namespace

void launch_kernel(std::string_view name, const void* kernel, dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, std::function<void()> body) {
  if (!valid_config(grid, block)) return set_last_error(cudaErrorInvalidConfiguration);
  if (smem > kernel_shared_limit(kernel)) return set_last_error(cudaErrorInvalidValue);
  std::string label(name);
  enqueue(stream, "kernel " + label, [label, grid, block, smem, body = std::move(body)] {
    run_grid(label, grid, block, smem, body);
  });
}

void* dynamic_shared() {
  return t_exec ? t_exec->shared_base : nullptr;
}
void sync_block() {
  suspend(State::at_block);
}
void sync_warp() {
  suspend(State::at_warp);
}
void sync_warp_fenced() {
  suspend(State::at_warp, true);
}
uint64_t* exchange_slot(unsigned lane_in_block) {
  return &t_exec->exchange[lane_in_block];
}
unsigned linear_thread() {
  return t_exec->current;
}
void trap(const char* why) {
  throw DeviceFault(cudaErrorLaunchFailure, why);
}

}  // namespace tessera::emu

unsigned __ballot_sync(unsigned, int pred) {
  using namespace tessera::emu;
  const unsigned me = linear_thread();
  const unsigned base = me & ~31u;
  sync_warp();
  *exchange_slot(me) = pred ? 1 : 0;
  sync_warp();
  unsigned bits = 0;
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  for (unsigned l = 0; l < 32 && base + l < n; ++l)
    if (*exchange_slot(base + l)) bits |= 1u << l;
  return bits;
}
