#include "dist/zero.h"

#include <cmath>
#include <unordered_map>

#include "autograd/engine.h"
#include "core/allocator.h"
#include "core/backend.h"
#include "core/meta_device.h"
#include "kernels/cpu/elementwise.h"
#include "optim/optimizer.h"

namespace tessera::dist {
namespace {

// Bytes in use in the allocator of the engine's device (size-class rounded, as DDP counts).
int64_t in_use(Device dev) {
  return int64_t(allocator_for(dev).stats().in_use);
}

int64_t round_up(int64_t n, int64_t m) {
  return (n + m - 1) / m * m;
}

// Points a parameter at `storage` from element `offset`, contiguous.
void repoint(const Tensor& p, const std::shared_ptr<Storage>& storage, int64_t offset) {
  TensorImpl& impl = p.impl();
  impl.storage = storage;
  impl.offset = offset;
  impl.strides = contiguous_strides(impl.shape);
}

// Whether parameters on d are on the host: the CPU, or the meta device's stand-in for it (a plan
// for GPUs builds its model there).
bool on_host(Device d) {
  return d.is_cpu() || d == Device::meta(meta::kHostIndex);
}

// Elements [a, b) of a contiguous tensor, as a 1-D view of its storage.
Tensor flat_range(const Tensor& t, int64_t a, int64_t b) {
  return t.view(Shape{t.numel()}).slice_rows(a, b);
}

// dst = src for 1-D f32 views of equal length on one device: a memcpy on the CPU, a copy queued
// on the current stream on a GPU (Tensor::copy_from). Nothing to do when they are the same
// elements (an in-place gather).
void copy_into(Tensor dst, const Tensor& src) {
  if (dst.raw_data() != src.raw_data()) dst.copy_from(src);
}

// The squared L2 norm of a contiguous f32 buffer, summed in f64 on its device (on a GPU in a
// fixed order, returned to the host: it synchronises the current stream).
double sum_squares(const Tensor& t) {
  if (t.device().is_cpu()) {
    meta::kernel_runs(Device::cpu(), meta::table_cost::sum_squares(t.numel()));
    return cpu::sum_squares(t.data<float>(), t.numel());
  }
  return backend_for(t.device(), "ZeRO").sum_squares(t.data<float>(), t.numel());
}

// t *= factor, in place on t's device.
void scale_in_place(const Tensor& t, float factor) {
  float* g = t.data<float>();
  if (t.device().is_cpu()) {
    meta::kernel_runs(Device::cpu(), meta::table_cost::scale(t.numel()));
    cpu::scale(g, g, factor, t.numel());
    return;
  }
  backend_for(t.device(), "ZeRO").scale(g, factor, t.numel());
}

}  // namespace

Zero::Zero(nn::Module& model, Communicator& comm, const DataParallelOptions& opt, Tracer* tracer,
           const ParameterUnits& units)
    : DataParallel(comm, tracer, opt),
      stage_(opt.zero_stage),
      reduce_each_micro_batch_(stage_ >= 2 && comm.world_size() > 1),
      params_(model.parameters()) {
  TS_CHECK(stage_ >= 1 && stage_ <= 3, "ZeRO: stage {} is not 1, 2 or 3", stage_);
  TS_CHECK(!params_.empty(), "ZeRO: the model has no parameters");
  // Every buffer lives on the device given, else where the parameters are; parameters on the
  // host are copied from (only this rank's shard, under stage 3) and then moved there.
  dev_ = opt.device.value_or(params_[0].device());
  // The layout of FlatParameters (same checks on the parameters).
  int64_t end = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    TS_CHECK(p.dtype() == DType::f32 && (p.device() == dev_ || on_host(p.device())) &&
                 p.requires_grad() && p.is_leaf() && p.is_contiguous(),
             "ZeRO: parameter '{}' ({} on {}) must be a contiguous f32 leaf that requires grad, "
             "on {} or on the cpu",
             p.name(), p.desc(), p.device().str(), dev_.str());
    ParamSegment s{p.name(), p.shape(), round_up(end, FlatParameters::kAlignElems), p.numel()};
    end = s.offset + s.numel;
    segs_.push_back(std::move(s));
  }
  numel_ = round_up(end, FlatParameters::kAlignElems);
  shards_ = ShardLayout(numel_, comm.world_size(), FlatParameters::kAlignElems);
  sbegin_ = shards_.begin(comm.rank());
  send_ = shards_.end(comm.rank());
  alive_ = std::make_shared<Zero*>(this);
  released_ = std::make_shared<Storage>(0, dev_);

  place_values();
  place_grads();
  std::vector<bool> decay;
  for (const Tensor& p : params_) decay.push_back(decay_if_matrix(p));
  const int64_t before_opt = in_use(dev_);
  optimizer_ =
      std::make_unique<ShardedOptimizer>(segs_, decay, numel_, sbegin_, send_, opt.optimizer, dev_);
  memory_.optimizer_bytes = in_use(dev_) - before_opt;

  std::vector<Bucket> buckets = plan_buckets(segs_, numel_, opt.bucket_mb);
  gather_track_ = 1 + int(buckets.size());
  scheduler_ = std::make_unique<BucketScheduler>(
      params_, std::move(buckets), [this](const Bucket& b) { return launch_bucket(b); }, tracer);
  if (stage_ == 3) build_units(units);
  if (tracer_ && stage_ < 3) tracer_->name_track(gather_track_, "parameter all-gather");
}

Zero::~Zero() {
  try {
    for (Unit& u : units_)
      for (WorkHandle& w : u.flight) w->wait();
  } catch (const std::exception&) {
  }
}

void Zero::place_values() {
  const int64_t n = stage_ == 3 ? send_ - sbegin_ : numel_;
  const int64_t before = in_use(dev_);
  values_ = Tensor::zeros(Shape{n}, DType::f32, dev_);
  memory_.param_bytes = in_use(dev_) - before;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamSegment& s = segs_[i];
    const Tensor& p = params_[i];
    if (stage_ < 3) {
      copy_into(flat_range(values_, s.offset, s.offset + s.numel), flat_range(p, 0, s.numel));
      repoint(p, values_.impl().storage, s.offset);
    } else {
      const int64_t a = std::max(s.offset, sbegin_), b = std::min(s.offset + s.numel, send_);
      if (a < b)
        copy_into(flat_range(values_, a - sbegin_, b - sbegin_),
                  flat_range(p, a - s.offset, b - s.offset));
      repoint(p, released_, 0);
    }
  }
}

void Zero::place_grads() {
  const int64_t before = in_use(dev_);
  if (stage_ == 1) {
    grads_ = Tensor::zeros(Shape{numel_}, DType::f32, dev_);
    for (size_t i = 0; i < params_.size(); ++i) {
      auto view = std::make_shared<TensorImpl>();
      view->storage = grads_.impl().storage;
      view->offset = segs_[i].offset;
      view->shape = segs_[i].shape;
      view->strides = contiguous_strides(segs_[i].shape);
      view->dtype = DType::f32;
      grad_views_.push_back(view);
    }
  }
  shard_grads_ = Tensor::zeros(Shape{send_ - sbegin_}, DType::f32, dev_);
  memory_.grad_bytes = in_use(dev_) - before;
  zero_grad();
}

void Zero::build_units(const ParameterUnits& given) {
  std::unordered_map<const TensorImpl*, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[&params_[i].impl()] = i;
  std::vector<std::vector<size_t>> groups;
  if (given.units.empty()) {
    // No layered forward: the whole model is one unit, present during each micro-batch.
    groups.emplace_back();
    for (size_t i = 0; i < params_.size(); ++i) groups.back().push_back(i);
    stages_ = {{0}};
  } else {
    layered_ = true;
    std::vector<int> owner(params_.size(), -1);
    for (size_t u = 0; u < given.units.size(); ++u) {
      groups.emplace_back();
      for (const Tensor& t : given.units[u]) {
        auto it = index.find(&t.impl());
        TS_CHECK(it != index.end(), "ZeRO-3: unit {} lists '{}', which is not a model parameter", u,
                 t.name());
        TS_CHECK(owner[it->second] < 0, "ZeRO-3: parameter '{}' is in units {} and {}", t.name(),
                 owner[it->second], u);
        owner[it->second] = int(u);
        groups.back().push_back(it->second);
      }
    }
    for (size_t i = 0; i < params_.size(); ++i)
      TS_CHECK(owner[i] >= 0, "ZeRO-3: parameter '{}' is in no unit", params_[i].name());
    stages_ = given.stages;
    TS_CHECK(!stages_.empty(), "ZeRO-3: the forward has no stages");
    for (const auto& st : stages_)
      for (int u : st)
        TS_CHECK(u >= 0 && size_t(u) < groups.size(), "ZeRO-3: stage uses unit {} of {}", u,
                 groups.size());
  }
  for (auto& g : groups) {
    std::sort(g.begin(), g.end());
    Unit unit;
    for (size_t p : g) {
      const int64_t end = p + 1 < segs_.size() ? segs_[p + 1].offset : numel_;
      if (!unit.ranges.empty() && unit.ranges.back().params.back() + 1 == p)
        unit.ranges.back().end = end;
      else
        unit.ranges.push_back({segs_[p].offset, end, {}});
      unit.ranges.back().params.push_back(p);
    }
    units_.push_back(std::move(unit));
  }
  if (tracer_)
    for (size_t u = 0; u < units_.size(); ++u)
      tracer_->name_track(gather_track_ + int(u), fmt::format("parameter gather, unit {}", u));
}

Tensor Zero::shard_values() const {
  return stage_ == 3 ? values_ : values_.slice_rows(sbegin_, send_);
}

int64_t Zero::param_numel() const {
  int64_t n = 0;
  for (const ParamSegment& s : segs_) n += s.numel;
  return n;
}

void Zero::zero_grad() {
  micro_batches_reduced_ = 0;
  if (stage_ == 1) {
    grads_.fill_(0.0);
    for (size_t i = 0; i < params_.size(); ++i) params_[i].impl().grad = grad_views_[i];
  } else {
    for (Tensor& p : params_) p.zero_grad();
  }
}

void Zero::begin_micro_batch(bool last) {
  if (!reduce_each_micro_batch_) {
    scheduler_->arm(last);  // the whole gradients accumulate; reduced after the last
  } else {
    // Stages 2-3 keep no whole gradients between micro-batches: each micro-batch's are reduced
    // into the shard, the first's straight in, later ones' added in bucket by bucket.
    if (micro_batches_reduced_ > 0) finish_reductions();
    scheduler_->arm(true);
    ++micro_batches_reduced_;
  }
  if (stage_ == 3) {
    release_everything();  // what the previous micro-batch's backward left gathered
    if (!layered_) acquire(0);
  }
}

void Zero::finish_backward() {
  if (stage_ == 1) {
    // A .grad autograd replaced (after Tensor::zero_grad on a parameter) is copied in.
    for (size_t i = 0; i < params_.size(); ++i) {
      auto& g = params_[i].impl().grad;
      if (g == grad_views_[i]) continue;
      Tensor view(grad_views_[i]);
      if (g) view.copy_from(Tensor(g));
      g = grad_views_[i];
    }
  }
  finish_reductions();
  micro_batches_reduced_ = 0;
  if (stage_ == 3) release_everything();
}

void Zero::finish_reductions() {
  scheduler_->finish();  // every bucket reduced (launching any no hook did)
  while (!sends_.empty()) complete_oldest_send(/*wait=*/true);
}

WorkHandle Zero::launch_bucket(const Bucket& b) {
  Tensor in;
  if (stage_ == 1) {
    in = grads_.slice_rows(b.begin, b.end);
  } else {
    // Gather the bucket's gradients into one send buffer and free them: from here on this
    // rank keeps only its shard of them.
    // On a GPU the copies are queued on the compute stream, and a gradient freed here goes
    // back to the caching allocator for that stream only (stream order protects it); the
    // collective waits for the copies (nccl_comm.h) and keeps `in` alive until it is done.
    // A send buffer lives until its reduce-scatter is complete: unbounded, a backward whose
    // communication falls behind would hold a whole gradient's worth of them, as much as the
    // whole gradients these stages do not keep. Waiting for the oldest while kSendsInFlight
    // are pending bounds them to that many buckets, as FSDP bounds its reduce-scatters.
    // (One already done is not waited for: a wait orders the compute stream after it.) On a
    // GPU the bound is looser: an NCCL handle keeps its tensors, and the bucket scheduler keeps
    // the handles until the micro-batch's reductions are finished.
    while (!sends_.empty()) {
      const bool done = sends_.front().work->done();
      if (!done && sends_.size() < kSendsInFlight) break;
      complete_oldest_send(/*wait=*/!done);
    }
    in = Tensor::zeros(Shape{b.numel()}, DType::f32, dev_);
    for (size_t p : b.params) {
      Tensor g = params_[p].grad();
      if (!g.defined()) continue;  // unused parameter: zero gradient
      const ParamSegment& s = segs_[p];
      TS_CHECK(g.dtype() == DType::f32 && g.numel() == s.numel && g.device() == dev_,
               "ZeRO: gradient {} on {} of parameter '{}' does not match it ({} elements on {})",
               g.desc(), g.device().str(), s.name, s.numel, dev_.str());
      const int64_t at = s.offset - b.begin;
      copy_into(in.slice_rows(at, at + s.numel), flat_range(g.contiguous(), 0, s.numel));
      params_[p].zero_grad();
    }
  }
  const int64_t lo = std::clamp(b.begin, sbegin_, send_) - sbegin_;
  const int64_t hi = std::clamp(b.end, sbegin_, send_) - sbegin_;
  // A later micro-batch's part of the shard arrives beside it, to be added once complete.
  Send send{nullptr, Tensor(), lo};
  if (micro_batches_reduced_ > 1) send.addend = Tensor::empty(Shape{hi - lo}, DType::f32, dev_);
  const Tensor into = send.addend.defined() ? send.addend : shard_grads_.slice_rows(lo, hi);
  send.work =
      comm_.reduce_scatter_async(in, into, shards_.counts_in(b.begin, b.end), ReduceOp::average);
  const WorkHandle w = send.work;
  if (stage_ >= 2) sends_.push_back(std::move(send));
  return w;
}

void Zero::complete_oldest_send(bool wait) {
  Send& s = sends_.front();
  if (wait) s.work->wait();
  if (s.addend.defined())
    autograd::add_into(shard_grads_.slice_rows(s.at, s.at + s.addend.numel()), s.addend,
                       s.addend.numel());
  sends_.pop_front();
}

double Zero::clip_grad_norm(double max_norm, float grad_scale) {
  // Each rank's share of the squared norm, summed over ranks on the host in rank order (the
  // same double on every rank, so all take the same branch).
  double sq = model_parallel_ ? counted_sum_squares(shard_grads_, sbegin_, segs_)
                              : sum_squares(shard_grads_);
  sq = comm_.sum_f64(sq);
  if (model_parallel_) sq = model_parallel_->sum_f64(sq);  // the model's other parts
  const double norm = std::sqrt(sq) / double(grad_scale);
  if (!std::isfinite(norm)) return norm;
  double factor = 1.0 / double(grad_scale);
  if (max_norm > 0 && norm > max_norm) factor *= max_norm / norm;
  if (factor != 1.0) scale_in_place(shard_grads_, float(factor));
  return norm;
}

void Zero::queue_squared_norm(double* dst) {
  if (model_parallel_) {  // the shard's part of this rank's model part, counted once
    queue_counted_sum_squares(shard_grads_, sbegin_, segs_, dst);
    return;
  }
  backend_for(shard_grads_.device(), "zero gradient norm")
      .sum_squares_into(shard_grads_.data<float>(), shard_grads_.numel(), dst);
}

void Zero::step(float lr, const StepGate* gate) {
  {
    ScopedSpan span(tracer_, "optimizer");
    optimizer_->step(lr, shard_values(), shard_grads_, gate);
  }
  if (stage_ == 3) return;
  // Every rank updated its shard; gather the others' (in place).
  std::vector<int64_t> counts;
  for (int r = 0; r < shards_.world(); ++r) counts.push_back(shards_.size(r));
  WorkHandle w = comm_.all_gather_async(values_.slice_rows(sbegin_, send_), values_, counts);
  {
    ScopedSpan span(tracer_, "wait for parameters", SpanKind::wait);
    w->wait();
  }
  if (tracer_)
    tracer_->add({"all-gather parameters", SpanKind::comm, gather_track_, w->start_time(),
                  w->end_time(), tracer_->step()});
}

TrainingStateView Zero::training_state() {
  TrainingStateView v;
  v.segments = segs_;
  v.numel = numel_;
  v.values_begin = stage_ == 3 ? sbegin_ : 0;
  v.values = values_;
  v.optimizer = optimizer_->name();
  v.optimizer_steps = optimizer_->step_count();
  v.state_begin = sbegin_;
  v.state_end = send_;
  v.state = optimizer_->state_buffers();
  return v;
}

uint64_t Zero::parameter_checksum() {
  Tensor full = values_;
  if (stage_ == 3) {
    full = Tensor::empty(Shape{numel_}, DType::f32, dev_);
    std::vector<int64_t> counts;
    for (int r = 0; r < shards_.world(); ++r) counts.push_back(shards_.size(r));
    comm_.all_gather(values_, full, counts);
  }
  // Device buffers are hashed from a host copy (synchronous: it waits for the gather).
  const Tensor host = full.device().is_cpu() ? full : full.to(Device::cpu());
  return fnv1a(host.data<float>(), numel_);
}

// ---- Stage 3: gathering units of parameters ----

void Zero::start_gather(int u) {
  Unit& unit = units_[size_t(u)];
  if (unit.present || !unit.flight.empty()) return;
  unit.buffers.clear();
  for (const Range& r : unit.ranges) {
    Tensor buf = Tensor::empty(Shape{r.end - r.begin}, DType::f32, dev_);
    const int64_t lo = std::clamp(r.begin, sbegin_, send_) - sbegin_;
    const int64_t hi = std::clamp(r.end, sbegin_, send_) - sbegin_;
    unit.flight.push_back(
        comm_.all_gather_async(values_.slice_rows(lo, hi), buf, shards_.counts_in(r.begin, r.end)));
    unit.buffers.push_back(buf);
  }
}

void Zero::acquire(int u) {
  Unit& unit = units_[size_t(u)];
  ++unit.refs;
  if (unit.present) return;
  start_gather(u);
  {
    ScopedSpan span(tracer_, "wait for parameters", SpanKind::wait);
    for (WorkHandle& w : unit.flight) w->wait();
  }
  if (tracer_)
    for (WorkHandle& w : unit.flight)
      tracer_->add({fmt::format("gather unit {}", u), SpanKind::comm, gather_track_ + u,
                    w->start_time(), w->end_time(), tracer_->step()});
  unit.flight.clear();
  for (size_t k = 0; k < unit.ranges.size(); ++k) {
    const Range& r = unit.ranges[k];
    for (size_t p : r.params)
      repoint(params_[p], unit.buffers[k].impl().storage, segs_[p].offset - r.begin);
  }
  unit.present = true;
}

void Zero::release(int u) {
  Unit& unit = units_[size_t(u)];
  TS_ASSERT(unit.refs > 0);
  if (--unit.refs > 0) return;
  for (const Range& r : unit.ranges)
    for (size_t p : r.params) repoint(params_[p], released_, 0);
  unit.buffers.clear();
  unit.present = false;
}

void Zero::release_everything() {
  for (size_t u = 0; u < units_.size(); ++u) {
    Unit& unit = units_[u];
    for (WorkHandle& w : unit.flight) w->wait();  // a prefetch nobody used
    unit.flight.clear();
    if (unit.present) {
      unit.refs = 1;
      release(int(u));
    }
    unit.refs = 0;
    unit.buffers.clear();
  }
}

void Zero::enter(int stage) {
  TS_CHECK(stage >= 0 && size_t(stage) < stages_.size(), "ZeRO-3: enter({}) of {} stages", stage,
           stages_.size());
  for (int u : stages_[size_t(stage)]) acquire(u);
  // Prefetch what comes next: the next stage's units, or, from the last stage, those the
  // backward pass needs right after it (the stage before).
  if (size_t(stage) + 1 < stages_.size())
    for (int u : stages_[size_t(stage) + 1]) start_gather(u);
  else if (stage > 0)
    for (int u : stages_[size_t(stage) - 1]) start_gather(u);
}

Tensor Zero::exit(int stage, const Tensor& x) {
  TS_CHECK(stage >= 0 && size_t(stage) < stages_.size(), "ZeRO-3: exit({}) of {} stages", stage,
           stages_.size());
  // The last stage's parameters stay: its backward comes right after the forward.
  if (size_t(stage) + 1 == stages_.size()) return x;
  for (int u : stages_[size_t(stage)]) release(u);
  if (!x.requires_grad() || !grad_enabled()) return x;
  std::weak_ptr<Zero*> alive = alive_;
  return autograd::record(x.detach(), "zero3_stage_boundary", {x}, [alive, stage](const Tensor& g) {
    if (auto self = alive.lock()) (*self)->backward_boundary(stage);
    return std::vector<Tensor>{g};
  });
}

// Runs when stage+1's backward is done and before stage's own.
void Zero::backward_boundary(int stage) {
  for (int u : stages_[size_t(stage) + 1]) release(u);
  for (int u : stages_[size_t(stage)]) acquire(u);
  if (stage > 0)
    for (int u : stages_[size_t(stage) - 1]) start_gather(u);
}

void Zero::gather_all() {
  if (stage_ != 3) return;
  for (size_t u = 0; u < units_.size(); ++u) start_gather(int(u));
  for (size_t u = 0; u < units_.size(); ++u) acquire(int(u));
}

void Zero::release_all() {
  if (stage_ != 3) return;
  release_everything();
}

void Zero::visit_present(size_t count, const std::function<void(size_t)>& visit) {
  TS_CHECK(count == params_.size(), "internal error: visit_present({}) of a model of {} parameters",
           count, params_.size());
  if (stage_ != 3) return DataParallel::visit_present(count, visit);
  for (size_t u = 0; u < units_.size(); ++u) {
    acquire(int(u));
    if (u + 1 < units_.size()) start_gather(int(u) + 1);
    for (const Range& r : units_[u].ranges)
      for (size_t p : r.params) visit(p);
    release(int(u));
  }
}

}  // namespace tessera::dist
