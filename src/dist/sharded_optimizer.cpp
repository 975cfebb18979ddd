#include "dist/sharded_optimizer.h"

#include <cmath>

#include "kernels/cpu/elementwise.h"

namespace tessera::dist {

ShardedOptimizer::ShardedOptimizer(const std::vector<ParamSegment>& segs,
                                   const std::vector<bool>& decay, int64_t numel, int64_t begin,
                                   int64_t end, ShardedOptimizerOptions opt)
    : opt_(std::move(opt)), n_(end - begin) {
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
  // Shards are allocated even when empty so every rank's state is a real, measurable buffer.
  if (opt_.name == "adamw") {
    m_ = Tensor::zeros(Shape{n_});
    v_ = Tensor::zeros(Shape{n_});
  } else if (opt_.sgd.momentum > 0) {
    m_ = Tensor::zeros(Shape{n_});
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

void ShardedOptimizer::step(float lr, float* p, const float* g) {
  TS_CHECK(std::isfinite(lr) && lr >= 0, "{}: step: learning rate {} must be finite and >= 0",
           name(), lr);
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

}  // namespace tessera::dist
