// A light step profiler: scoped timers keyed by op family (and, optionally, by kernel name),
// always compiled in, switched on at run time (bench_train_step --profile). Kernels open a
// Scope for their family; the time of a nested scope is charged to the inner scope only
// (exclusive time), so the families add up to at most the wall time of the step. When
// profiling is off a Scope costs one relaxed atomic load and a branch.
//
// Only the thread that switched profiling on records (OpenMP workers run inside a kernel's
// scope, which the calling thread times); scopes opened on other threads are ignored.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::prof {

enum class Family : uint8_t {
  gemm,         // oneDNN matmuls (linear, matmul, conv's GEMM)
  attention,    // fused causal attention kernels
  norm,         // LayerNorm / RMSNorm
  elementwise,  // activations, add / mul / scale, bias and gradient reductions, softmax
  cast,         // dtype conversions (f32 <-> bf16 operands) and fills
  embed_loss,   // embedding lookup / scatter, cross-entropy
  optimizer,    // optimizer step and gradient zeroing
  data,         // drawing a batch
  autograd,     // the backward engine's own work: graph walk, gradient accumulation, closures
  comm,         // waiting for a collective or transfer to complete (MPI)
  kCount
};
constexpr int kFamilies = int(Family::kCount);
const char* family_name(Family f);

namespace detail {
extern std::atomic<bool> g_enabled;
}
inline bool enabled() {
  return detail::g_enabled.load(std::memory_order_relaxed);
}
// Turns recording on or off; the calling thread becomes the recording thread.
void set_enabled(bool on);

// Adds floating-point operations done by a kernel of family f (for achieved-rate figures).
void add_flops(Family f, double flops);

struct KernelTotal {
  std::string name;
  Family family;
  double seconds = 0;
  uint64_t calls = 0;
};

struct Totals {
  std::array<double, kFamilies> seconds{};
  std::array<uint64_t, kFamilies> calls{};
  std::array<double, kFamilies> flops{};
  std::vector<KernelTotal> kernels;  // per scope name, in first-seen order
  double total_seconds() const;
};
Totals totals();
void reset();

// The breakdown `bench_train_step --profile` and `tessera train --profile` print: exclusive time
// per family as a mean per step (with its share of `step_seconds`, calls and achieved GFLOP/s),
// the untracked rest of the step, then every named kernel by time. `steps`: how many steps
// the totals cover.
std::string format_breakdown(const Totals& t, double step_seconds, int64_t steps);

class Scope {
 public:
  // name: a string literal naming the kernel (kept by pointer); null charges the family only.
  explicit Scope(Family f, const char* name = nullptr) {
    if (enabled()) begin(f, name);
  }
  ~Scope() {
    if (active_) end();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void begin(Family f, const char* name);
  void end();
  bool active_ = false;
  int16_t prev_ = -1;  // the slot that was running when this scope opened (-1: none)
};

}  // namespace tessera::prof
