// The optimizer step of ZeRO stages 1-3: the update rules of optim/adamw.h and optim/sgd.h
// applied to one rank's shard [begin, end) of the flat buffers, with state (AdamW's m and v,
// SGD's momentum) allocated for that shard only, on the parameters' device. The per-element
// math is the same code as AdamW::step / SGD::step: on the CPU optim/update_rules.h, on a CUDA
// device the same fused kernels the flat optimizers launch (kernels/cuda/optim.h), over the
// shard instead of the whole buffer. So a sharded run matches a replicated one bit for bit on
// either backend.
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
  // FlatParameters); decay[i]: whether parameter i decays; [begin, end): this rank's shard;
  // device: where the shard's values, gradients and state live.
  ShardedOptimizer(const std::vector<ParamSegment>& segments, const std::vector<bool>& decay,
                   int64_t numel, int64_t begin, int64_t end, ShardedOptimizerOptions opt,
                   Device device = Device::cpu());

  const char* name() const { return opt_.name.c_str(); }
  Device device() const { return device_; }
  // One update of the shard: values and grads are its [end - begin] elements (contiguous f32,
  // on device()). On a GPU the update is queued on the current stream.
  // With a gate, as the device decided (Optimizer::step's gate).
  void step(float lr, const Tensor& values, const Tensor& grads, const StepGate* gate = nullptr);
  // The same from host pointers to the shard's first element (a CPU optimizer only).
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
  void check_lr(float lr) const;
  void step_on_device(float lr, float* values, const float* grads, const StepGate* gate);

  ShardedOptimizerOptions opt_;
  Device device_;
  int64_t n_;
  std::vector<Run> runs_;
  Tensor device_runs_;  // runs_ as DeviceDecayRun records on device_ (a GPU optimizer only)
  int64_t step_ = 0;
  Tensor m_, v_;                // AdamW moments, or SGD momentum in m_
  DeviceBiasCorrections bias_;  // for gated AdamW steps
};

}  // namespace tessera::dist
