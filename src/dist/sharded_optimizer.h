// The optimizer step of ZeRO stages 1-3: the update rules of optim/adamw.h and optim/sgd.h
// applied to one rank's shard [begin, end) of the flat buffers, with state (AdamW's m and v,
// SGD's momentum) allocated for that shard only. The per-element math is the same expression as
// AdamW::step / SGD::step, so a sharded run matches a replicated one to rounding.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "optim/adamw.h"
#include "optim/flat_params.h"
#include "optim/sgd.h"

namespace tessera::dist {

struct ShardedOptimizerOptions {
  std::string name = "adamw";  // "adamw" | "sgd"
  AdamWOptions adamw;
  SGDOptions sgd;
};

class ShardedOptimizer {
 public:
  // segments: every parameter's place in the flat buffers of `numel` elements (same layout as
  // FlatParameters); decay[i]: whether parameter i decays; [begin, end): this rank's shard.
  ShardedOptimizer(const std::vector<ParamSegment>& segments, const std::vector<bool>& decay,
                   int64_t numel, int64_t begin, int64_t end, ShardedOptimizerOptions opt);

  const char* name() const { return opt_.name.c_str(); }
  // One update of the shard: values and grads point at the shard's first element.
  void step(float lr, float* values, const float* grads);
  int64_t step_count() const { return step_; }
  // Checkpoints: the state buffers (views, named as the flat optimizers name theirs:
  // "exp_avg", "exp_avg_sq" / "momentum") and the update count.
  std::vector<std::pair<std::string, Tensor>> state_buffers() const;
  void set_step_count(int64_t steps);
  // Bytes of optimizer state this rank holds.
  size_t state_bytes() const;

 private:
  using Run = UpdateRun;  // shard-local ranges
  ShardedOptimizerOptions opt_;
  int64_t n_;
  std::vector<Run> runs_;
  int64_t step_ = 0;
  Tensor m_, v_;  // AdamW moments, or SGD momentum in m_
};

}  // namespace tessera::dist
