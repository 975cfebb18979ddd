// The CUDA table of core/backend.h: each entry forwards to the copy, kernel or runtime call
// that core, autograd, optim, dist and train used to name directly, on the current stream.
#include "cuda/backend.h"

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "core/error.h"
#include "core/tensor.h"
#include "cuda/copy.h"
#include "cuda/device.h"
#include "cuda/op_kernels.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/optim.h"
#include "kernels/cuda/strided_copy.h"

namespace tessera::cuda {

namespace {

// The optimizers upload DeviceDecayRun arrays that the kernels read as DecayRange: same layout.
static_assert(std::is_standard_layout_v<DeviceDecayRun> && std::is_standard_layout_v<DecayRange>);
static_assert(sizeof(DeviceDecayRun) == sizeof(DecayRange) &&
              offsetof(DeviceDecayRun, begin) == offsetof(DecayRange, begin) &&
              offsetof(DeviceDecayRun, end) == offsetof(DecayRange, end) &&
              offsetof(DeviceDecayRun, decay) == offsetof(DecayRange, decay));

const DecayRange* decay_ranges(const DeviceDecayRun* runs) {
  return reinterpret_cast<const DecayRange*>(runs);
}

// Registers the CUDA allocator and selects the device before the first allocation on it (the
// allocator serves the current device). Per thread: the current device is per-thread state.
void activate(int index) {
  thread_local int selected = -1;
  if (selected == index) return;
  TS_CHECK(available(), "device cuda:{} is not available: no CUDA device ({})", index,
           probe_devices().reason);
  init(index);
  selected = index;
}

void strided(const void* src, void* dst, const StridedLayout& l, size_t elem_size) {
  StridedView v;  // by value into the kernel: one launch, no metadata upload
  v.ndim = l.ndim;
  for (int d = 0; d < l.ndim; ++d) v.sizes[d] = l.sizes[d], v.strides[d] = l.strides[d];
  strided_copy(src, dst, v, elem_size);
}

void adamw(const AdamWArgs& in) {
  AdamWStep a;
  a.p = in.p, a.g = in.g, a.m = in.m, a.v = in.v, a.n = in.n;
  a.runs = decay_ranges(in.runs), a.nruns = in.nruns;
  a.beta1 = in.beta1, a.beta2 = in.beta2, a.eps = in.eps;
  a.step_size = in.step_size, a.inv_sqrt_bc2 = in.inv_sqrt_bc2, a.decayed = in.decayed;
  a.gate = in.gate, a.bias = in.bias_corrections, a.lr = in.lr;
  adamw_step(a);
}

void sgd(const SGDArgs& in) {
  SGDStep a;
  a.p = in.p, a.g = in.g, a.b = in.b, a.n = in.n;
  a.runs = decay_ranges(in.runs), a.nruns = in.nruns;
  a.lr = in.lr, a.momentum = in.momentum, a.weight_decay = in.weight_decay;
  a.nesterov = in.nesterov;
  a.gate = in.gate;
  sgd_step(a);
}

// The stream arguments of the kernels and copies default to current_stream(): lambdas, not the
// functions themselves, so that the default is taken.
constexpr DeviceBackend kTable = {
    .device_count = [] { return probe_devices().count; },
    .unavailable_reason = [] { return probe_devices().reason; },
    .describe = [](int index) { return device_summary(index); },
    .memory_bytes = [](int index) { return device_memory_bytes(index); },
    .activate = activate,
    .synchronize = [] { cuda::synchronize(current_stream()); },
    .host_waits = [] { return cuda::host_waits(); },
    .memset = [](void* dst, int byte, size_t bytes) { memset_async(dst, byte, bytes); },
    .copy_from_host = [](void* dst, const void* src, size_t bytes) { copy_h2d(dst, src, bytes); },
    .copy_to_host = [](void* dst, const void* src, size_t bytes) { copy_d2h(dst, src, bytes); },
    .copy = [](void* dst, const void* src, size_t bytes) { copy_d2d(dst, src, bytes); },
    .strided_copy = strided,
    .cast = [](const void* src, DType st, void* dst, DType dt,
               int64_t n) { cuda::cast(src, st, dst, dt, n); },
    .fill = [](void* dst, DType t, double value, int64_t n) { cuda::fill(dst, t, value, n); },
    .upload_async = [](const Tensor& host, int index) { return cuda::upload_async(host, index); },
    .read_async = [](const void* src, size_t bytes) { return cuda::read_async(src, bytes); },
    .add_inplace = [](float* dst, const float* src, int64_t n) { cuda::add_inplace(dst, src, n); },
    .scale = [](float* x, float factor, int64_t n) { cuda::scale<float>(x, x, factor, n); },
    .sum_squares = [](const float* x, int64_t n) { return cuda::sum_squares(x, n); },
    .adamw_step = adamw,
    .sgd_step = sgd,
    .unscale_grads = [](float* g, int64_t n,
                        float inv_scale) { return cuda::unscale_grads(g, n, inv_scale); },
    .sum_squares_into = [](const float* x, int64_t n,
                           double* out) { cuda::sum_squares_into(x, n, out); },
    .add_loss = [](const float* loss, double* out,
                   double divisor) { cuda::add_loss(loss, out, divisor); },
    .decide_step = [](const StepDecisionArgs& a) { cuda::decide_step(a); },
    // src/backends/cuda.cu adds dist's NCCL communicator (dist is a layer below this one).
    .communicator_name = nullptr,
    .make_communicator = nullptr,
    .ops = &kOpKernels,
};

}  // namespace

const DeviceBackend& backend_table() {
  return kTable;
}

}  // namespace tessera::cuda
