// The meta device: tensors with shapes and dtypes and no contents. Nothing is computed on it;
// every kernel an op would launch, every copy and fill, and every collective a communicator
// would start is recorded instead, in order, into the active Trace. The planner (src/plan/)
// runs the real training code (model, autograd, optimizer, DDP / ZeRO, tensor, pipeline and
// context parallelism) on it, so what it predicts comes from the code that will run, not
// from a formula written beside it:
//   - memory: meta storage goes through a caching allocator with the bookkeeping of the
//     target device's (cuda_size_class or host_size_class classes, a free list per class,
//     never returned), handing out addresses that are never dereferenced; its peak is the
//     peak the real allocator would reach for the same sequence of requests;
//   - compute: each op states its kernels' FLOPs and bytes (KernelCost, from the shapes), on
//     every device; on the meta device that is all it does (kernel_runs returns false);
//   - communication: the planner's communicator (dist/meta_comm.h) records each collective's
//     size and group, and where its handle is waited on.
//
// To everything above core the meta device is a device like a GPU (not the CPU): code that
// branches on is_cpu() takes its device path, through meta_backend(). Reading a meta tensor
// on the host (to_vector, item, a loss read) gives zeros.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace tessera {

class Allocator;
struct DeviceBackend;

namespace meta {

// What bounds a kernel, for the cost model: tensor-core GEMM throughput (with a shape-dependent
// efficiency), fused attention (tensor-core FLOPs at attention's efficiency), or memory
// bandwidth and vector FLOPs (everything else).
enum class KernelClass : uint8_t { gemm, attention, other };

// One kernel's cost, computed from shapes by the op that launches it.
struct KernelCost {
  const char* name = "";  // a string literal: the kernel or op ("linear_fwd", "adamw")
  KernelClass cls = KernelClass::other;
  double flops = 0;             // floating-point operations; a multiply-add counts 2
  double bytes = 0;             // bytes of device memory read and written (each operand once)
  DType dtype = DType::f32;     // a GEMM's or attention's operand type; a pass's first tensor's
  int64_t m = 0, n = 0, k = 0;  // a GEMM's shape (batched GEMMs: batch folded into m)
};

// The GEMM C[m, n] (+)= A[m, k] B[k, n] with operands of type t and an f32 result, batch times.
KernelCost gemm_cost(const char* name, int64_t batch, int64_t m, int64_t n, int64_t k, DType t);
// An element-wise or reduction kernel over `elements` that moves `bytes` and does
// `flops_per_element` operations per element.
KernelCost memory_bound_cost(const char* name, int64_t elements, double bytes,
                             double flops_per_element = 1);

// The kernels of the backend table (core/backend.h) and of their CPU counterparts, costed in one
// place: the meta backend records them in place of running them, and the CPU paths doing the
// same work record them before running it, so that a timed trace of a CPU run (plan/calibrate.h)
// sees the optimizer, the casts and the copies as kernels of their own.
namespace table_cost {
KernelCost memset(size_t bytes);
KernelCost copy(size_t bytes);
KernelCost strided_copy(int64_t elements, size_t element_size);
KernelCost cast(int64_t elements, DType from, DType to);
KernelCost fill(int64_t elements, DType t);
KernelCost add_inplace(int64_t n);
KernelCost scale(int64_t n);
KernelCost sum_squares(int64_t n);
KernelCost adamw(int64_t n);
KernelCost sgd(int64_t n);
KernelCost unscale_grads(int64_t n);
}  // namespace table_cost

// The ranks of a communicator as a progression: first, first + stride, ... (size of them).
// Every group Tessera forms (a mesh axis, a stage's peers, the first and last stages) is one.
struct RankGroup {
  int size = 1;
  int first = 0;
  int stride = 1;
  int world = 1;  // the job's ranks
};

// One collective or point-to-point transfer as started by a rank.
struct CollectiveEvent {
  const char* op = "";  // "all_reduce", "reduce_scatter", "all_gather", "broadcast", "send",
                        // "recv", "barrier"
  double bytes = 0;     // the whole buffer's bytes: all_reduce's t, reduce_scatter's `in`,
                        // all_gather's `out`, a transfer's tensor
  RankGroup group;
  int peer = -1;     // send / recv: the peer's rank in the job
  int64_t work = 0;  // the handle, which a later WaitEvent names
};

enum class EventKind : uint8_t { kernel, collective, wait, mark };

struct Event {
  EventKind kind = EventKind::kernel;
  KernelCost kernel;           // kind == kernel
  CollectiveEvent collective;  // kind == collective
  int64_t work = 0;            // kind == wait: the collective handle waited on
  std::string mark;            // kind == mark: a label (the planner's step boundaries)
  double seconds = 0;          // a timed trace's: when it was recorded, after the trace began
};

// What one rank did, in order. Thread-safe to append (a background thread may record).
// A timed trace stamps each event with the time it was recorded: on a device that computes as it
// is told (the CPU), one kernel event to the next is what that kernel and the work around it took,
// which is how the planner calibrates its cost model to this machine (plan/calibrate.h).
class Trace {
 public:
  explicit Trace(bool timed = false);
  void add(Event e);
  std::vector<Event> events() const;
  size_t size() const;
  void clear();

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
  bool timed_ = false;
  std::chrono::steady_clock::time_point start_;
};

// Records into `trace` while alive (process-wide; scopes do not nest).
class TraceScope {
 public:
  explicit TraceScope(Trace& trace);
  ~TraceScope();
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;
};

// While alive, nothing this thread does is recorded (active_trace() is null on it): the local
// calibration's stand-ins for other ranks train beside the timed run without entering its trace.
class UntracedThread {
 public:
  UntracedThread();
  ~UntracedThread();
  UntracedThread(const UntracedThread&) = delete;
  UntracedThread& operator=(const UntracedThread&) = delete;

 private:
  bool was_;
};

// The trace being recorded into; null when none (or on an UntracedThread).
Trace* active_trace();
// Appends to the active trace, if any.
void record(Event e);
void record_mark(std::string label);

// Records the kernel an op is about to launch on device d; false when d is the meta device,
// where the op must not launch it (there is nothing to compute on). Every op calls it at each
// kernel launch site: `if (meta::kernel_runs(dev, cost)) { ...launch... }`.
bool kernel_runs(Device d, const KernelCost& cost);

// Whose bookkeeping the meta allocator reproduces: the CUDA caching allocator's (a plan for
// GPUs) or the host's (a plan checked against this machine's CPU runs).
enum class AllocatorModel : uint8_t { cuda, host };

// Empties the meta allocators and resets their statistics, the planned device's now following
// `model`. Requires no meta tensor alive (their blocks would be returned to the new books).
void reset_allocator(AllocatorModel model);
// Blocks handed out and not yet freed (live meta storages; persistent buffers not counted).
int64_t live_allocations();
// The model the meta allocator follows (the last reset_allocator's; cuda before any).
AllocatorModel allocator_model();
// Whether the meta device plays a GPU: true while its allocator follows the CUDA model. The one
// place that decides; ops::is_cuda (ops/dispatch.h) is true for the meta device then, so every op
// takes its CUDA path's allocations, casts and kernel costs there (and launches nothing: each
// device_kernels sits behind kernel_runs, so a CPU-only build plans for GPUs too).
bool plays_cuda();
// The buffers a CUDA kernel helper takes from the device's caching allocator for the length of
// one call (partial sums, a backward's row statistics, staged ids): on the meta device playing a
// GPU, each of `bytes` allocated, then all released, so the peak sees it; nothing on any other
// device (where the helper allocates it itself). Several: all held at once, then released. Zero
// bytes: nothing.
void scratch(Device d, std::initializer_list<size_t> bytes);
// A buffer the CUDA backend allocates at its first use and keeps (cuBLASLt's workspace): on the
// meta device playing a GPU, allocated once per key (a string literal) and held until the next
// reset_allocator; nothing on any other device.
void persistent(Device d, const char* key, size_t bytes);

// The meta device that stands for host memory (Device::meta(kHostIndex)): what BuildOnMeta
// builds on when the meta device plays a GPU. Its allocator is separate and always keeps the
// host allocator's books, so a model built there and moved to Device::meta() counts on the
// planned device only once moved, as in a real GPU run. (Planning for this CPU, BuildOnMeta
// builds on Device::meta() itself: a CPU run's build is in its device's peak.)
constexpr int kHostIndex = 1;

// While alive, tensors this thread creates for the CPU (Tensor::empty and the factories built on
// it) are created on the meta device's host stand-in instead (Device::meta(kHostIndex)): a model of
// any size is built without memory and without its initial values being drawn (random fills only
// advance their generator, so the generator's state afterwards is the same). Used by the planner to
// build models whose weights would not fit this machine.
class BuildOnMeta {
 public:
  BuildOnMeta();
  ~BuildOnMeta();
  BuildOnMeta(const BuildOnMeta&) = delete;
  BuildOnMeta& operator=(const BuildOnMeta&) = delete;
};
// Whether a BuildOnMeta is alive on this thread.
bool building_on_meta();

}  // namespace meta

// The meta device's allocator (the planned device's; index kHostIndex: the host stand-in's) and
// backend table (allocator_for and find_backend return them).
Allocator& meta_allocator(int index = 0);
const DeviceBackend& meta_backend();

}  // namespace tessera
