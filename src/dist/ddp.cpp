#include "dist/ddp.h"

#include <cmath>

#include "core/allocator.h"
#include "core/backend.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/sgd.h"

namespace tessera::dist {

namespace {
int64_t in_use(Device dev = Device::cpu()) {
  return int64_t(allocator_for(dev).stats().in_use);
}
}  // namespace

std::unique_ptr<Optimizer> make_flat_optimizer(FlatParameters& flat,
                                               const ShardedOptimizerOptions& opt) {
  if (opt.name == "sgd") return std::make_unique<SGD>(flat, opt.sgd);
  TS_CHECK(opt.name == "adamw", "optimizer: unknown optimizer '{}', expected adamw or sgd",
           opt.name);
  return std::make_unique<AdamW>(flat, opt.adamw);
}

DDP::DDP(nn::Module& model, Communicator& comm, const DataParallelOptions& opt, Tracer* tracer)
    : DataParallel(comm, tracer, opt) {
  // FlatParameters allocates values and gradients together; the model's own parameter storage
  // is released as it moves in, so the net change is the gradient buffer (values moved).
  // Allocator bytes are size-class rounded; count the moved-out storage the same way.
  std::vector<Tensor> params = model.parameters();
  const Device dev = params.empty() ? Device::cpu() : params[0].device();
  if (!dev.is_cpu()) {
    // On a GPU the values are moved too, but the device allocator has its own size classes:
    // count the flat buffers' bytes, and the optimizer state as the device's change in use.
    flat_ = std::make_unique<FlatParameters>(std::move(params));
    memory_.param_bytes = int64_t(flat_->values().impl().storage->nbytes);
    memory_.grad_bytes = int64_t(flat_->grads().impl().storage->nbytes);
    const int64_t before_opt = in_use(dev);
    optimizer_ = make_flat_optimizer(*flat_, opt.optimizer);
    memory_.optimizer_bytes = in_use(dev) - before_opt;
  } else {
    int64_t model_bytes = 0;
    for (const Tensor& p : params)
      model_bytes += int64_t(CpuCachingAllocator::size_class(p.impl().storage->nbytes));
    const int64_t before = in_use();
    flat_ = std::make_unique<FlatParameters>(std::move(params));
    const int64_t after_flat = in_use();
    memory_.param_bytes =
        int64_t(CpuCachingAllocator::size_class(flat_->values().impl().storage->nbytes));
    memory_.grad_bytes = after_flat - before + model_bytes - memory_.param_bytes;
    optimizer_ = make_flat_optimizer(*flat_, opt.optimizer);
    memory_.optimizer_bytes = in_use() - after_flat;
  }

  if (comm.world_size() > 1) {
    std::vector<Bucket> buckets = plan_buckets(flat_->segments(), flat_->numel(), opt.bucket_mb);
    FlatParameters* flat = flat_.get();
    Communicator* c = &comm_;
    scheduler_ = std::make_unique<BucketScheduler>(
        flat_->params(), std::move(buckets),
        [flat, c](const Bucket& b) {
          return c->all_reduce_async(flat->grads().slice_rows(b.begin, b.end), ReduceOp::average);
        },
        tracer);
  }
}

void DDP::zero_grad() {
  flat_->zero_grad();
}

void DDP::begin_micro_batch(bool last) {
  if (scheduler_) scheduler_->arm(last);
}

void DDP::finish_backward() {
  if (!scheduler_) return;
  flat_->sync_grads();  // no-op unless a .grad was detached from the flat buffer
  scheduler_->finish();
}

double DDP::clip_grad_norm(double max_norm, float grad_scale) {
  if (model_parallel_) {  // the model's norm sums every model-parallel rank's part
    flat_->sync_grads();
    const double sq = counted_sum_squares(flat_->grads(), 0, flat_->segments());
    const double norm = std::sqrt(model_parallel_->sum_f64(sq)) / double(grad_scale);
    if (!std::isfinite(norm)) return norm;
    double factor = 1.0 / double(grad_scale);
    if (max_norm > 0 && norm > max_norm) factor *= max_norm / norm;
    if (factor != 1.0) scale_grads(*flat_, float(factor));
    return norm;
  }
  if (grad_scale != 1.f) return unscale_and_clip(*flat_, max_norm, grad_scale);
  return max_norm > 0 ? tessera::clip_grad_norm(*flat_, max_norm) : grad_norm(*flat_);
}

void DDP::step(float lr, const StepGate* gate) {
  ScopedSpan span(tracer_, "optimizer");
  optimizer_->step(lr, gate);
}

void DDP::queue_squared_norm(double* dst) {
  flat_->sync_grads();
  if (model_parallel_) {  // this rank's part of the model, each parameter counted once
    queue_counted_sum_squares(flat_->grads(), 0, flat_->segments(), dst);
    return;
  }
  backend_for(flat_->device(), "ddp gradient norm")
      .sum_squares_into(flat_->grad_ptr(), flat_->numel(), dst);
}

TrainingStateView DDP::training_state() {
  TrainingStateView v;
  v.segments = flat_->segments();
  v.numel = flat_->numel();
  v.values = flat_->values();
  const OptimizerState s = optimizer_->state();
  v.optimizer = s.optimizer;
  v.optimizer_steps = s.step;
  v.state_end = v.numel;
  v.state = s.buffers;
  return v;
}

void DDP::set_optimizer_steps(int64_t steps) {
  OptimizerState s = optimizer_->state();  // views: loading them back copies nothing
  s.step = steps;
  optimizer_->load_state(s);
}

uint64_t DDP::parameter_checksum() {
  // Device buffers are hashed from a host copy (a debugging aid, not on the hot path).
  const Tensor values = flat_->values();
  const Tensor host = values.device().is_cpu() ? values : values.to(Device::cpu());
  return fnv1a(host.data<float>(), flat_->numel());
}

}  // namespace tessera::dist
