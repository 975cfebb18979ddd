// Device backends: the one table through which core, autograd, optim, dist, train and the ops
// reach a device other than the host: memory, copies, casts, fills, the reductions and fused
// optimizer steps over flat f32 buffers, device selection and description, the device's
// communicator, and each op's kernels (`ops`: kernels/common/op_kernels.h, which ops/dispatch.h's
// device_kernels reads).
//
// The CPU is the host, not a backend. Its code is called directly where it lives (core for
// memory, kernels/cpu for casts and reductions, optim/update_rules.h for the optimizer rules,
// shared with ZeRO): core is the lowest layer and cannot gather those into a table without
// depending on the layers above it, and a direct call keeps the CPU paths exactly as fast as
// they were. Callers branch once per op: `if (d.is_cpu()) host code; else
// backend_for(d).fn(...)` (one indirect call per op, never per element).
//
// How the CUDA table gets here. src/cuda/backend.cu defines it (constant-initialised: no static
// constructor, so no initialisation-order question), and src/backends/ (the bottom layer, the
// one place that knows which backends the build has) hands it, with dist's NCCL communicator,
// to core as built_in_backend(), which core/backend.cpp calls by name. That call is what makes
// the linker keep the table: libtessera.a is a static library, and a self-registering object
// (a static registrar in an otherwise unreferenced .o) is dropped from every program that calls
// nothing else in it, so tensors on cuda:0 would fail there; a weak hook fails the same way (an
// undefined weak symbol pulls no archive member in). So there is no init call to forget: the
// first lookup finds the table. A CPU-only build compiles src/backends/host_only.cpp, which has
// none. register_backend replaces a built-in table (a test double, a backend added from outside
// the library); null restores it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/shape.h"

namespace tessera {

class Tensor;
namespace dist {
class Communicator;  // dist/communicator.h; core only passes the pointer through
}
namespace kernels {
struct OpKernels;  // kernels/common/op_kernels.h; core only passes the pointer through
}

// A device-to-host copy in flight (DeviceBackend::read_async).
class HostRead {
 public:
  virtual ~HostRead() = default;
  // The bytes, once the copy has landed. Waits for the device only if the host has not already
  // synchronised past the copy: read after a later synchronisation of the same stream, it is
  // free (the training loop reads its losses after the gradient norm's read).
  virtual const void* wait() = 0;
};

// A strided source view (Tensor::contiguous of a view): sizes and strides in elements,
// outermost first.
struct StridedLayout {
  int32_t ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
};

// A maximal range [begin, end) of the flat optimizer buffers whose parameters share one weight-
// decay setting, as the device kernels read it: an array of these in device memory, sorted,
// covering [0, n) (Optimizer::device_decay_runs uploads it once per layout).
struct DeviceDecayRun {
  int64_t begin, end;
  int32_t decay;  // 0 or 1
};

// A device training step's verdict, in device memory. Deciding a step on the host (is the
// loss finite, how much to clip, did fp16 overflow) means reading the gradient norm, a wait for
// the device every step; train/step_decider.h decides it on the device instead (decide_step), and
// the update kernels read the verdict. The host reads the verdicts in batches, at logged steps.
struct StepGate {
  int32_t skip = 0;        // 1: this step's loss or gradient norm is not finite: no update
  float factor = 1.f;      // what the update multiplies each gradient by: 1 / loss scale x clip
  int64_t applied = 0;     // updates applied, this step's included: AdamW's t
  float loss_scale = 1.f;  // fp16's dynamic loss scale, for the next step
  float seed = 1.f;        // loss_scale / micro-batches: the next step's backward seed
  int64_t clean_steps = 0, skipped_steps = 0;  // the loss scaler's counters (LossScalerState)
};

// One step's verdict as the host reads it back (train/step_decider.h).
struct StepRecord {
  double loss = 0;          // the mean over micro-batches and ranks
  double grad_norm = 0;     // the true norm (the loss scale divided out), before clipping
  float scale_used = 1.f;   // fp16's loss scale in this step
  float scale_after = 1.f;  // and after its verdict
  int32_t outcome = 0;      // StepOutcome
  int32_t unused = 0;
};
enum StepOutcome : int32_t { kStepApplied = 0, kStepOverflow = 1, kStepBad = 2 };

// Each rank's share of a step's sums, gathered (as bytes) from every rank into rank order.
struct RankStepSums {
  double squares = 0;  // of the (loss-scaled) gradients this rank counts towards the norm
  double loss = 0;     // sum over micro-batches of loss / micro-batches
  double counted = 0;  // 1: squares is part of the model's norm; 0: a replica's (not added)
  // 1: loss is one of those the step's loss is the mean of; 0: this rank has none (a pipeline
  // stage before the last).
  double loss_counted = 1;
};

// decide_step: the host's rules of Trainer::apply_or_skip_update and DynamicLossScaler::update,
// in the same f64 arithmetic and order, so a step decides alike on either side.
struct StepDecisionArgs {
  StepGate* gate = nullptr;
  StepRecord* record = nullptr;
  const RankStepSums* sums = nullptr;  // [ranks], rank order
  int32_t ranks = 1;
  int64_t micro_batches = 1;
  double max_norm = 0;  // 0: no clipping
  // The loss scaler (LossScalerOptions); enabled only under fp16.
  int32_t scaler_enabled = 0;
  float growth_factor = 2.f, backoff_factor = 0.5f, min_scale = 1.f;
  int64_t growth_interval = 2000;
};

// AdamW over n elements of the flat f32 buffers, per element exactly as update_rules.h's
// adamw_update with the scalars of AdamWScalars::at (computed on the host).
//
// With a gate: nothing when gate->skip; each gradient times gate->factor; step_size and
// inv_sqrt_bc2 from lr and bias_corrections[2t], [2t + 1] (1 - beta1^t and 1 - beta2^t, in f64,
// computed on the host) for t = gate->applied, as AdamWScalars::at computes them.
struct AdamWArgs {
  float* p = nullptr;        // weights [n]
  const float* g = nullptr;  // gradients [n]
  float* m = nullptr;        // exp_avg [n]
  float* v = nullptr;        // exp_avg_sq [n]
  int64_t n = 0;
  const DeviceDecayRun* runs = nullptr;  // device array
  int32_t nruns = 0;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float step_size = 0, inv_sqrt_bc2 = 0, decayed = 1;
  const StepGate* gate = nullptr;
  const double* bias_corrections = nullptr;  // device array, read with a gate
  float lr = 0;                              // read with a gate
};

// SGD as update_rules.h's sgd_update. b null: no momentum buffer. runs are read only when
// weight_decay != 0. With a gate: nothing when gate->skip, each gradient times gate->factor.
struct SGDArgs {
  float* p = nullptr;
  const float* g = nullptr;
  float* b = nullptr;
  int64_t n = 0;
  const DeviceDecayRun* runs = nullptr;
  int32_t nruns = 0;
  float lr = 0, momentum = 0, weight_decay = 0;
  bool nesterov = false;
  const StepGate* gate = nullptr;
};

// Every entry is set. Work is queued on the calling thread's current stream of the device and
// is ordered with the kernels the ops queue there; entries that return a value to the host
// (sum_squares, unscale_grads) wait for it. Pointers are device memory unless named host.
struct DeviceBackend {
  // Devices.
  int (*device_count)();                // 0 when there is none (unavailable_reason says why)
  std::string (*unavailable_reason)();  // the runtime's answer, when device_count() is 0
  std::string (*describe)(int index);   // "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)"
  size_t (*memory_bytes)(int index);    // the device's total memory (0: not known)
  void (*activate)(int index);          // selects the device on this thread and readies its
                                        // allocator (core/allocator.h); an Error naming the
                                        // device and why when it is not there
  void (*synchronize)();                // waits for this thread's current stream
  // The times the host has waited for the device so far, where the runtime counts them (the
  // emulated device: cuda::host_waits); -1 where it does not (a GPU).
  int64_t (*host_waits)();

  // Memory. copy_from_host reads pageable host memory and returns once the source has been read
  // (later work on the stream sees the data); copy_to_host is complete only after synchronize().
  void (*memset)(void* dst, int byte, size_t bytes);
  void (*copy_from_host)(void* dst, const void* host_src, size_t bytes);
  void (*copy_to_host)(void* host_dst, const void* src, size_t bytes);
  void (*copy)(void* dst, const void* src, size_t bytes);
  // dst (numel contiguous elements of elem_size bytes) = the view at src; bytes are moved, never
  // converted.
  void (*strided_copy)(const void* src, void* dst, const StridedLayout& view, size_t elem_size);
  void (*cast)(const void* src, DType src_type, void* dst, DType dst_type, int64_t n);
  void (*fill)(void* dst, DType type, double value, int64_t n);
  // The training loop's batch copy (a CPU tensor to device `index`): staged through pinned
  // memory, returns without waiting for the device; the caller may reuse `host` at once.
  Tensor (*upload_async)(const Tensor& host, int index);
  // Starts copying `bytes` of device memory at src to the host (pinned memory) on the current
  // stream; returns at once.
  std::unique_ptr<HostRead> (*read_async)(const void* src, size_t bytes);

  // Flat f32 buffers (gradients, optimizer state).
  void (*add_inplace)(float* dst, const float* src, int64_t n);
  void (*scale)(float* x, float factor, int64_t n);  // x *= factor
  double (*sum_squares)(const float* x, int64_t n);  // in f64, in a fixed order
  void (*adamw_step)(const AdamWArgs& a);
  void (*sgd_step)(const SGDArgs& a);
  // g *= inv_scale; whether every result is finite.
  bool (*unscale_grads)(float* g, int64_t n, float inv_scale);

  // A step decided on the device (StepGate), none of which waits: *out += the sum of squares of
  // x (as sum_squares); *out += double(*loss) / divisor; the verdict (one thread).
  void (*sum_squares_into)(const float* x, int64_t n, double* out);
  void (*add_loss)(const float* loss, double* out, double divisor);
  void (*decide_step)(const StepDecisionArgs& a);

  // The communicator between processes on this kind of device ("nccl"), one device per process:
  // collective over `bootstrap` (a working CPU communicator of the same ranks, which carries the
  // set-up). peer_timeout_s: how long a live peer may keep a collective waiting before it is a
  // failure (never shorter than the backend's own default).
  const char* communicator_name;
  std::shared_ptr<dist::Communicator> (*make_communicator)(
      std::shared_ptr<dist::Communicator> bootstrap, int index, double peer_timeout_s);

  // Every op's kernels on this device (null: the ops have no path to it).
  const kernels::OpKernels* ops;
};

// The build's own table for devices of type t (null for none): defined in src/backends/, by the
// file the build compiles there (cuda.cu, or host_only.cpp without CUDA).
const DeviceBackend* built_in_backend(DeviceType t);
// Replaces the table of DeviceType t (not cpu); null restores the built-in one, if any.
void register_backend(DeviceType t, const DeviceBackend* backend);
// The table of devices of type t; null for the CPU and for a device this build has no backend for.
const DeviceBackend* find_backend(DeviceType t);
// The table of d's backend. For the CPU or a device without a backend, an Error:
// "<what>: device cuda:0 is not available: this build has no CUDA backend (configure with nvcc,
// or -DTESSERA_CUDA_EMULATION=ON)". `what` names the caller (the op, the optimizer); may be null.
const DeviceBackend& backend_for(Device d, const char* what = nullptr);

}  // namespace tessera
