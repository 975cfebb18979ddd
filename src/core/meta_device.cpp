#include "core/meta_device.h"

#include <atomic>
#include <cstring>
#include <map>
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

void Trace::add(Event e) {
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

Trace* active_trace() {
  return g_trace.load(std::memory_order_acquire);
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
    ++live_;
    return p;
  }
  void release(void* ptr, size_t bytes) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    const size_t cls = size_class(bytes);
    free_[cls].push_back(ptr);
    stats_.in_use -= cls;
    --live_;
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
    stats_ = AllocatorStats{};
    next_ = kBase;
  }
  int64_t live() const {
    std::lock_guard<std::mutex> lock(mu_);
    return live_;
  }
  AllocatorModel model() const {
    std::lock_guard<std::mutex> lock(mu_);
    return model_;
  }

 private:
  static constexpr uintptr_t kBase = uintptr_t(0x7e) << 40;  // above user space's usual maps
  size_t size_class(size_t bytes) const {
    return model_ == AllocatorModel::cuda ? cuda_size_class(bytes) : host_size_class(bytes);
  }
  mutable std::mutex mu_;
  AllocatorModel model_ = AllocatorModel::cuda;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
  uintptr_t next_ = kBase;
  int64_t live_ = 0;
};

MetaAllocator& the_allocator() {
  static MetaAllocator* a = new MetaAllocator();  // never destroyed, like the CPU's
  return *a;
}

// The backend table: each entry records what the device would have done.
void record_kernel(const char* name, int64_t elements, double bytes, double flops_per_element) {
  kernel_runs(Device::meta(), memory_bound_cost(name, elements, bytes, flops_per_element));
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
    .activate = [](int) {},
    .synchronize = [] {},
    .memset = [](void*, int, size_t n) { record_kernel("memset", int64_t(n), double(n), 0); },
    .copy_from_host = [](void*, const void*, size_t n) { record_kernel("h2d", int64_t(n), 0, 0); },
    .copy_to_host = [](void* host, const void*, size_t n) { std::memset(host, 0, n); },
    .copy = [](void*, const void*, size_t n) { record_kernel("copy", int64_t(n), 2.0 * n, 0); },
    .strided_copy =
        [](const void*, void*, const StridedLayout& v, size_t es) {
          int64_t n = 1;
          for (int d = 0; d < v.ndim; ++d) n *= v.sizes[d];
          record_kernel("strided_copy", n, 2.0 * double(n) * double(es), 0);
        },
    .cast =
        [](const void*, DType a, void*, DType b, int64_t n) {
          record_kernel("cast", n, double(n) * double(dtype_size(a) + dtype_size(b)), 1);
        },
    .fill = [](void*, DType t, double,
               int64_t n) { record_kernel("fill", n, double(n) * double(dtype_size(t)), 0); },
    .upload_async =
        [](const Tensor& host, int) {
          Tensor t = Tensor::empty(host.shape(), host.dtype(), Device::meta());
          keep_host_mirror(t, host.contiguous());
          return t;
        },
    .read_async = [](const void*, size_t n) -> std::unique_ptr<HostRead> {
      return std::make_unique<ZeroRead>(n);
    },
    .add_inplace = [](float*, const float*, int64_t n) { record_kernel("add_", n, 12.0 * n, 1); },
    .scale = [](float*, float, int64_t n) { record_kernel("scale_", n, 8.0 * n, 1); },
    .sum_squares =
        [](const float*, int64_t n) {
          record_kernel("sum_squares", n, 4.0 * n, 2);
          return 0.0;
        },
    .adamw_step = [](const AdamWArgs& a) { record_kernel("adamw", a.n, 28.0 * a.n, 12); },
    .sgd_step = [](const SGDArgs& a) { record_kernel("sgd", a.n, 20.0 * a.n, 4); },
    .unscale_grads =
        [](float*, int64_t n, float) {
          record_kernel("unscale_grads", n, 8.0 * n, 2);
          return true;
        },
    .communicator_name = "meta",
    .make_communicator = [](std::shared_ptr<dist::Communicator>, int,
                            double) -> std::shared_ptr<dist::Communicator> {
      fail(
          "the meta device has no communicator of its own: the planner gives the trainer one "
          "(dist/meta_comm.h)");
    },
};

}  // namespace

void reset_allocator(AllocatorModel model) {
  the_allocator().reset(model);
}

int64_t live_allocations() {
  return the_allocator().live();
}

AllocatorModel allocator_model() {
  return the_allocator().model();
}

}  // namespace meta

Allocator& meta_allocator() {
  return meta::the_allocator();
}

const DeviceBackend& meta_backend() {
  return meta::kMetaBackend;
}

}  // namespace tessera
