#include "dist/sharded_optimizer.h"

#include <cmath>

#include "core/backend.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::dist {

ShardedOptimizer::ShardedOptimizer(const std::vector<ParamSegment>& segs,
                                   const std::vector<bool>& decay, int64_t numel, int64_t begin,
                                   int64_t end, ShardedOptimizerOptions opt, Device device)
    : opt_(std::move(opt)), device_(device), n_(end - begin) {
  TS_CHECK(opt_.name == "adamw" || opt_.name == "sgd",
           "sharded optimizer: unknown optimizer '{}', expected adamw or sgd", opt_.name);
  TS_CHECK(segs.size() == decay.size() && !segs.empty(),
           "sharded optimizer: {} segments and {} decay flags", segs.size(), decay.size());
  TS_CHECK(0 <= begin && begin <= end && end <= numel,
           "sharded optimizer: shard [{}, {}) outside the flat buffer of {}", begin, end, numel);
  if (opt_.name == "adamw") {
    const AdamWOptions& a = opt_.adamw;
    TS_CHECK(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1,
             "adamw: betas ({}, {}) must lie in [0, 1)", a.beta1, a.beta2);
    TS_CHECK(a.eps > 0, "adamw: eps {} must be > 0", a.eps);
    TS_CHECK(a.weight_decay >= 0, "adamw: weight_decay {} must be >= 0", a.weight_decay);
  } else {
    const SGDOptions& s = opt_.sgd;
    TS_CHECK(s.momentum >= 0 && s.momentum < 1, "sgd: momentum {} must lie in [0, 1)", s.momentum);
    TS_CHECK(!s.nesterov || s.momentum > 0, "sgd: nesterov needs momentum > 0");
  }
  // The runs of Optimizer::rebuild_runs (each parameter with its trailing padding), clipped to
  // the shard.
  for (size_t i = 0; i < segs.size(); ++i) {
    const int64_t a = std::max(segs[i].offset, begin);
    const int64_t b = std::min(i + 1 < segs.size() ? segs[i + 1].offset : numel, end);
    if (a >= b) continue;
    if (!runs_.empty() && runs_.back().decay == decay[i] && runs_.back().end == a - begin)
      runs_.back().end = b - begin;
    else
      runs_.push_back({a - begin, b - begin, decay[i]});
  }
  if (!device_.is_cpu() && !runs_.empty()) {
    // The runs never change (no set_decay here): uploaded once, as the flat optimizers'
    // Optimizer::device_decay_runs does. From pageable memory the copy has read `host` when it
    // returns, and the update kernels queued after it on the stream see the runs.
    const DeviceBackend& b = backend_for(device_, "sharded optimizer");
    std::vector<DeviceDecayRun> host;
    for (const Run& r : runs_) host.push_back({r.begin, r.end, r.decay ? 1 : 0});
    static_assert(sizeof(DeviceDecayRun) % sizeof(int64_t) == 0);
    const size_t bytes = host.size() * sizeof(DeviceDecayRun);
    device_runs_ = Tensor::empty(Shape{int64_t(bytes / sizeof(int64_t))}, DType::i64, device_);
    b.copy_from_host(device_runs_.raw_data(), host.data(), bytes);
  }
  // Shards are allocated even when empty so every rank's state is a real, measurable buffer.
  if (opt_.name == "adamw") {
    m_ = Tensor::zeros(Shape{n_}, DType::f32, device_);
    v_ = Tensor::zeros(Shape{n_}, DType::f32, device_);
  } else if (opt_.sgd.momentum > 0) {
    m_ = Tensor::zeros(Shape{n_}, DType::f32, device_);
  }
}

size_t ShardedOptimizer::state_bytes() const {
  return (m_.defined() ? m_.nbytes() : 0) + (v_.defined() ? v_.nbytes() : 0);
}

std::vector<std::pair<std::string, Tensor>> ShardedOptimizer::state_buffers() const {
  if (opt_.name == "adamw") return {{"exp_avg", m_}, {"exp_avg_sq", v_}};
  if (m_.defined()) return {{"momentum", m_}};
  return {};
}

void ShardedOptimizer::set_step_count(int64_t steps) {
  TS_CHECK(steps >= 0, "{}: set_step_count: {} is negative", name(), steps);
  step_ = steps;
}

void ShardedOptimizer::check_lr(float lr) const {
  TS_CHECK(std::isfinite(lr) && lr >= 0, "{}: step: learning rate {} must be finite and >= 0",
           name(), lr);
}

void ShardedOptimizer::step(float lr, const Tensor& values, const Tensor& grads,
                            const StepGate* gate) {
  auto check = [&](const char* what, const Tensor& t) {
    TS_CHECK(t.defined() && t.dtype() == DType::f32 && t.is_contiguous() && t.numel() == n_ &&
                 t.device() == device_,
             "sharded {}: step: shard {} {} on {}, expected contiguous f32 [{}] on {}", name(),
             what, t.defined() ? t.desc() : "undefined", t.defined() ? t.device().str() : "nowhere",
             n_, device_.str());
  };
  check("values", values);
  check("gradients", grads);
  if (device_.is_cpu()) {
    TS_CHECK(!gate, "sharded {}: a step gate is device memory; the shard is on the CPU", name());
    step(lr, values.data<float>(), grads.data<float>());
    return;
  }
  check_lr(lr);
  ++step_;
  step_on_device(lr, values.data<float>(), grads.data<float>(), gate);
}

void ShardedOptimizer::step(float lr, float* p, const float* g) {
  TS_CHECK(device_.is_cpu(),
           "sharded {}: step from host pointers, but the shard is on {} (pass the shard tensors)",
           name(), device_.str());
  check_lr(lr);
  ++step_;
  const bool parallel = n_ > cpu::kParallelGrain;
  if (opt_.name == "adamw") {
    const AdamWOptions& o = opt_.adamw;
    adamw_update(AdamWScalars::at(lr, step_, o.beta1, o.beta2, o.eps, o.weight_decay), runs_, p, g,
                 m_.data<float>(), v_.data<float>(), parallel);
    return;
  }
  const SGDOptions& o = opt_.sgd;
  sgd_update(lr, o.momentum, o.nesterov, o.weight_decay, runs_, p, g,
             m_.defined() ? m_.data<float>() : nullptr, parallel);
}

// One launch over the shard, filled in exactly as optim/adamw.cpp and optim/sgd.cpp fill theirs
// for the whole flat buffer (same scalars, same kernels), so the GPU shard updates bit for bit
// like the flat GPU optimizer.
void ShardedOptimizer::step_on_device(float lr, float* p, const float* g, const StepGate* gate) {
  const DeviceBackend& b = backend_for(device_, "sharded optimizer");
  const auto* runs = device_runs_.defined()
                         ? static_cast<const DeviceDecayRun*>(device_runs_.raw_data())
                         : nullptr;
  const auto nruns = int32_t(runs_.size());
  if (opt_.name == "adamw") {
    const AdamWOptions& o = opt_.adamw;
    const AdamWScalars sc = AdamWScalars::at(lr, step_, o.beta1, o.beta2, o.eps, o.weight_decay);
    AdamWArgs a;
    a.p = p;
    a.g = g;
    a.m = m_.data<float>();
    a.v = v_.data<float>();
    a.n = n_;
    a.runs = runs;
    a.nruns = nruns;
    a.beta1 = sc.beta1, a.beta2 = sc.beta2, a.eps = sc.eps;
    a.step_size = sc.step_size, a.inv_sqrt_bc2 = sc.inv_sqrt_bc2, a.decayed = sc.decayed;
    if (gate) {
      a.gate = gate, a.lr = lr;
      a.bias_corrections = bias_.covering(step_, o.beta1, o.beta2, device_);
    }
    b.adamw_step(a);
    return;
  }
  const SGDOptions& o = opt_.sgd;
  SGDArgs a;
  a.p = p;
  a.g = g;
  a.b = m_.defined() ? m_.data<float>() : nullptr;
  a.n = n_;
  if (o.weight_decay != 0.f) {  // the runs are only read when something decays
    a.runs = runs;
    a.nruns = nruns;
  }
  a.lr = lr, a.momentum = o.momentum, a.weight_decay = o.weight_decay;
  a.nesterov = o.nesterov;
  a.gate = gate;
  b.sgd_step(a);
}

}  // namespace tessera::dist
