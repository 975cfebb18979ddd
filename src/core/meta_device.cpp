#include "core/meta_device.h"

#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/tensor.h"

namespace tessera {
namespace meta {

KernelCost gemm_cost(const char* name, int64_t batch, int64_t m, int64_t n, int64_t k, DType t) {
  KernelCost c;
  c.name = name;
  c.cls = KernelClass::gemm;
  c.dtype = t;
  c.m = batch * m, c.n = n, c.k = k;
  c.flops = 2.0 * double(batch) * double(m) * double(n) * double(k);
  c.bytes = double(batch) * (double(m * k + k * n) * double(dtype_size(t)) + double(m * n) * 4);
  return c;
}

KernelCost memory_bound_cost(const char* name, int64_t elements, double bytes,
                             double flops_per_element) {
  KernelCost c;
  c.name = name;
  c.flops = double(elements) * flops_per_element;
  c.bytes = bytes;
  return c;
}

namespace table_cost {
// Bytes: each operand read once and each output written once (an update in place: both).
KernelCost memset(size_t bytes) {
  return memory_bound_cost("memset", int64_t(bytes), double(bytes), 0);
}
KernelCost copy(size_t bytes) {
  return memory_bound_cost("copy", int64_t(bytes), 2.0 * double(bytes), 0);
}
KernelCost strided_copy(int64_t elements, size_t element_size) {
  return memory_bound_cost("strided_copy", elements, 2.0 * double(elements) * double(element_size),
                           0);
}
KernelCost cast(int64_t elements, DType from, DType to) {
  return memory_bound_cost("cast", elements,
                           double(elements) * double(dtype_size(from) + dtype_size(to)), 1);
}
KernelCost fill(int64_t elements, DType t) {
  return memory_bound_cost("fill", elements, double(elements) * double(dtype_size(t)), 0);
}
KernelCost add_inplace(int64_t n) {  // y += x: read both, write y
  return memory_bound_cost("add_", n, 12.0 * double(n), 1);
}
KernelCost scale(int64_t n) {
  return memory_bound_cost("scale_", n, 8.0 * double(n), 1);
}
KernelCost sum_squares(int64_t n) {
  return memory_bound_cost("sum_squares", n, 4.0 * double(n), 2);
}
KernelCost adamw(int64_t n) {  // p, m, v read and written, g read
  return memory_bound_cost("adamw", n, 28.0 * double(n), 12);
}
KernelCost sgd(int64_t n) {  // p and the momentum read and written, g read
  return memory_bound_cost("sgd", n, 20.0 * double(n), 4);
}
KernelCost unscale_grads(int64_t n) {
  return memory_bound_cost("unscale_grads", n, 8.0 * double(n), 2);
}
}  // namespace table_cost

Trace::Trace(bool timed) : timed_(timed), start_(std::chrono::steady_clock::now()) {}

void Trace::add(Event e) {
  if (timed_)
    e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
}

std::vector<Event> Trace::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

size_t Trace::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size();
}

void Trace::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  events_.clear();
}

namespace {
std::atomic<Trace*> g_trace{nullptr};
thread_local int t_build_on_meta = 0;
}  // namespace

TraceScope::TraceScope(Trace& trace) {
  Trace* none = nullptr;
  TS_CHECK(g_trace.compare_exchange_strong(none, &trace),
           "meta::TraceScope: a trace is already being recorded (scopes do not nest)");
}

TraceScope::~TraceScope() {
  g_trace.store(nullptr);
}

namespace {
thread_local bool t_untraced = false;
}  // namespace

UntracedThread::UntracedThread() : was_(t_untraced) {
  t_untraced = true;
}

UntracedThread::~UntracedThread() {
  t_untraced = was_;
}

Trace* active_trace() {
  return t_untraced ? nullptr : g_trace.load(std::memory_order_acquire);
}

void record(Event e) {
  if (Trace* t = active_trace()) t->add(std::move(e));
}

void record_mark(std::string label) {
  Event e;
  e.kind = EventKind::mark;
  e.mark = std::move(label);
  record(std::move(e));
}

bool kernel_runs(Device d, const KernelCost& cost) {
  if (Trace* t = active_trace()) {
    Event e;
    e.kind = EventKind::kernel;
    e.kernel = cost;
    t->add(std::move(e));
  }
  return !d.is_meta();
}

BuildOnMeta::BuildOnMeta() {
  ++t_build_on_meta;
}
BuildOnMeta::~BuildOnMeta() {
  --t_build_on_meta;
}
bool building_on_meta() {
  return t_build_on_meta > 0;
}

namespace {

// The caching allocators' bookkeeping (core/allocator.cpp, cuda/allocator.cu) without memory:
// a request takes a cached block of its size class or a new one; a release caches the block.
// Addresses are distinct and 512-byte aligned, from a range no process maps (never touched).
class MetaAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++live_;
    return take(bytes);
  }
  void release(void* ptr, size_t bytes) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    give_back(ptr, bytes);
    --live_;
  }
  // scratch(): a block of each size taken, then all returned (the free list keeps them, as the
  // CUDA allocator's does).
  void scratch(std::initializer_list<size_t> bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<void*> taken;
    for (size_t b : bytes) taken.push_back(b ? take(b) : nullptr);
    size_t i = 0;
    for (size_t b : bytes)
      if (void* p = taken[i++]) give_back(p, b);
  }
  // persistent(): a block per key, held until reset.
  void persistent(const char* key, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (persistent_.count(key)) return;
    take(bytes);
    persistent_.insert(key);
  }
  AllocatorModel model() const {
    std::lock_guard<std::mutex> lock(mu_);
    return model_;
  }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [cls, blocks] : free_) stats_.reserved -= cls * blocks.size();
    free_.clear();
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_in_use = stats_.in_use;
  }
  void reset(AllocatorModel model) {
    std::lock_guard<std::mutex> lock(mu_);
    TS_CHECK(live_ == 0, "meta::reset_allocator: {} meta tensors are still alive (free them first)",
             live_);
    model_ = model;
    free_.clear();
    persistent_.clear();
    stats_ = AllocatorStats{};
    next_ = kBase;
  }
  int64_t live() const {
    std::lock_guard<std::mutex> lock(mu_);
    return live_;
  }

 private:
  // The bookkeeping of one request and one release (mu_ held).
  void* take(size_t bytes) {
    const size_t cls = size_class(bytes);
    void* p = nullptr;
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.cache_hits++;
    } else {
      p = reinterpret_cast<void*>(next_);
      next_ += (cls + 511) / 512 * 512;
      stats_.reserved += cls;
      stats_.system_allocs++;
    }
    stats_.in_use += cls;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    return p;
  }
  void give_back(void* ptr, size_t bytes) {
    const size_t cls = size_class(bytes);
    free_[cls].push_back(ptr);
    stats_.in_use -= cls;
  }

  static constexpr uintptr_t kBase = uintptr_t(0x7e) << 40;  // above user space's usual maps
  size_t size_class(size_t bytes) const {
    return model_ == AllocatorModel::cuda ? cuda_size_class(bytes) : host_size_class(bytes);
  }
  mutable std::mutex mu_;
  AllocatorModel model_ = AllocatorModel::cuda;
  std::map<size_t, std::vector<void*>> free_;
  std::set<std::string> persistent_;
  AllocatorStats stats_;
  uintptr_t next_ = kBase;
  int64_t live_ = 0;
};

MetaAllocator& the_allocator(int index = 0) {
  TS_CHECK(index == 0 || index == kHostIndex, "meta device index {}: expected 0 or {}", index,
           kHostIndex);
  // Never destroyed, like the CPU's.
  static MetaAllocator* device = new MetaAllocator();
  static MetaAllocator* host = [] {
    auto* a = new MetaAllocator();
    a->reset(AllocatorModel::host);
    return a;
  }();
  return index == 0 ? *device : *host;
}

// The backend table: each entry records what the device would have done.
void record_kernel(const KernelCost& cost) {
  kernel_runs(Device::meta(), cost);
}

class ZeroRead final : public HostRead {
 public:
  explicit ZeroRead(size_t bytes) : bytes_(bytes, 0) {}
  const void* wait() override { return bytes_.data(); }

 private:
  std::vector<char> bytes_;
};

constexpr DeviceBackend kMetaBackend = {
    .device_count = [] { return 1; },
    .unavailable_reason = [] { return std::string(); },
    .describe = [](int) { return std::string("shapes only, nothing computed"); },
    .memory_bytes = [](int) { return size_t(0); },
    .activate = [](int) {},
    .synchronize = [] {},
    .host_waits = [] { return int64_t(-1); },
    .memset = [](void*, int, size_t n) { record_kernel(table_cost::memset(n)); },
    .copy_from_host = [](void*, const void*,
                         size_t n) { record_kernel(memory_bound_cost("h2d", int64_t(n), 0, 0)); },
    .copy_to_host = [](void* host, const void*, size_t n) { std::memset(host, 0, n); },
    .copy = [](void*, const void*, size_t n) { record_kernel(table_cost::copy(n)); },
    .strided_copy =
        [](const void*, void*, const StridedLayout& v, size_t es) {
          int64_t n = 1;
          for (int d = 0; d < v.ndim; ++d) n *= v.sizes[d];
          record_kernel(table_cost::strided_copy(n, es));
        },
    .cast = [](const void*, DType a, void*, DType b,
               int64_t n) { record_kernel(table_cost::cast(n, a, b)); },
    .fill = [](void*, DType t, double, int64_t n) { record_kernel(table_cost::fill(n, t)); },
    .upload_async =
        [](const Tensor& host, int) {
          Tensor t = Tensor::empty(host.shape(), host.dtype(), Device::meta());
          keep_host_mirror(t, host.contiguous());
          return t;
        },
    .read_async = [](const void*, size_t n) -> std::unique_ptr<HostRead> {
      return std::make_unique<ZeroRead>(n);
    },
    .add_inplace = [](float*, const float*,
                      int64_t n) { record_kernel(table_cost::add_inplace(n)); },
    .scale = [](float*, float, int64_t n) { record_kernel(table_cost::scale(n)); },
    .sum_squares =
        [](const float*, int64_t n) {
          record_kernel(table_cost::sum_squares(n));
          return 0.0;
        },
    .adamw_step = [](const AdamWArgs& a) { record_kernel(table_cost::adamw(a.n)); },
    .sgd_step = [](const SGDArgs& a) { record_kernel(table_cost::sgd(a.n)); },
    .unscale_grads =
        [](float*, int64_t n, float) {
          record_kernel(table_cost::unscale_grads(n));
          return true;
        },
    .sum_squares_into = [](const float*, int64_t n,
                           double*) { record_kernel(table_cost::sum_squares(n)); },
    // One-thread kernels of a step decided on the device: nothing a step's time would show.
    .add_loss = [](const float*, double*, double) {},
    .decide_step = [](const StepDecisionArgs&) {},
    .communicator_name = "meta",
    .make_communicator = [](std::shared_ptr<dist::Communicator>, int,
                            double) -> std::shared_ptr<dist::Communicator> {
      fail(
          "the meta device has no communicator of its own: the planner gives the trainer one "
          "(dist/meta_comm.h)");
    },
    // No kernel runs on the meta device: every launch is behind meta::kernel_runs.
    .ops = nullptr,
};

}  // namespace

void reset_allocator(AllocatorModel model) {
  the_allocator(0).reset(model);
  the_allocator(kHostIndex).reset(AllocatorModel::host);
}

int64_t live_allocations() {
  return the_allocator(0).live() + the_allocator(kHostIndex).live();
}

AllocatorModel allocator_model() {
  return the_allocator().model();
}

bool plays_cuda() {
  return allocator_model() == AllocatorModel::cuda;
}

void scratch(Device d, std::initializer_list<size_t> bytes) {
  if (d == Device::meta() && plays_cuda()) the_allocator().scratch(bytes);
}

void persistent(Device d, const char* key, size_t bytes) {
  if (d == Device::meta() && plays_cuda()) the_allocator().persistent(key, bytes);
}

}  // namespace meta

Allocator& meta_allocator(int index) {
  return meta::the_allocator(index);
}

const DeviceBackend& meta_backend() {
  return meta::kMetaBackend;
}

}  // namespace tessera
