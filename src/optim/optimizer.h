// The optimizer interface: a step over a FlatParameters at a given learning rate, per-parameter
// weight decay on/off, and state (step count plus flat f32 buffers) for checkpoints.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "optim/flat_params.h"
#include "optim/update_rules.h"

namespace tessera {

struct StepGate;  // core/backend.h

// Everything an optimizer needs to resume bit-identically. Buffers are laid out like the flat
// parameter buffers (FlatParameters::segments() says where each parameter's state is).
struct OptimizerState {
  std::string optimizer;  // "adamw", "sgd": guards against loading one into the other
  int64_t step = 0;
  std::vector<std::pair<std::string, Tensor>> buffers;  // ("exp_avg", f32[numel]), ...
};

// Decides from a parameter whether weight decay applies to it.
using DecayFilter = std::function<bool(const Tensor& param)>;
// The usual default: decay matrices and kernels, not biases and norm gains (ndim >= 2).
bool decay_if_matrix(const Tensor& param);

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual const char* name() const = 0;
  // One update from the gradients in the flat gradient buffer. With a gate (device parameters
  // only): the update the device decided (core/backend.h's StepGate), skipped or with its
  // gradient factor, so the host need not know; step_count() then counts the calls, an upper
  // bound of the updates, until the caller sets it from the gate's count (load_state).
  virtual void step(float lr, const StepGate* gate) = 0;
  void step(float lr) { step(lr, nullptr); }

  int64_t step_count() const { return step_; }
  FlatParameters& params() const { return params_; }

  bool decays(size_t param) const { return decay_.at(param); }
  void set_decay(size_t param, bool on);

  // Views of the live state buffers (no copy): clone them to keep a snapshot.
  OptimizerState state() const;
  // Copies `s` into this optimizer's buffers (same optimizer kind, same flat layout).
  void load_state(const OptimizerState& s);

 protected:
  // params must outlive the optimizer. decay_filter null: decay_if_matrix.
  Optimizer(FlatParameters& params, const DecayFilter& decay_filter);

  // A zeroed f32 buffer shaped like the flat parameters, part of the checkpointed state.
  float* add_state_buffer(const std::string& name);
  // Checks lr, makes the flat gradients current and counts the step.
  void begin_step(float lr);

  // Maximal ranges of the flat buffers whose parameters share one decay setting; together they
  // cover the whole buffer (each parameter's trailing padding goes with it, and padding stays
  // zero under every update rule here since its gradient, value and state are zero).
  using DecayRun = UpdateRun;
  const std::vector<DecayRun>& decay_runs() const { return runs_; }
  // The same runs on the parameters' device for the device update kernels: decay_runs().size()
  // DeviceDecayRun records (core/backend.h) in an i64 tensor, uploaded on first use and again
  // only after set_decay changed them, not every step. An Error naming the device in a build
  // without its backend.
  const Tensor& device_decay_runs();

  FlatParameters& params_;
  int64_t step_ = 0;

 private:
  void rebuild_runs();

  std::vector<bool> decay_;
  std::vector<DecayRun> runs_;
  Tensor device_runs_;  // device_decay_runs()' cache; reset by rebuild_runs
  std::vector<std::pair<std::string, Tensor>> buffers_;
};

}  // namespace tessera
