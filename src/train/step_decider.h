// A training step decided on the device. The host used to read every step's gradient norm to
// decide it (clip how much, is it finite, did fp16 overflow): one wait for the device per step,
// during which the GPU runs dry. Here the device decides (core/backend.h's StepGate, written by
// the backend's decide_step with the host's rules), the update kernels read its verdict, and
// the host reads the verdicts in one batch when it needs them: at logged, evaluated, sampled
// and checkpointed steps, and every `capacity` steps at most.
//
// Per step: begin_step(); add_loss(l) for each micro-batch; the backward (fp16: seeded with
// backward_seed()); decide(dp); dp.step(lr, gate()). Then, when due, read().
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/backend.h"
#include "core/tensor.h"
#include "dist/communicator.h"
#include "dist/data_parallel.h"
#include "optim/loss_scaler.h"

namespace tessera::train {

struct StepDeciderOptions {
  LossScalerOptions scaler;  // enabled under fp16 only
  double max_norm = 0;       // optim.grad_clip (0: none)
  int64_t micro_batches = 1;
  int64_t capacity = 64;  // verdicts kept before the host must read them
  // Whether this rank's squared norm is part of the model's (DataParallel::norm_counted_here).
  bool counts_norm = true;
  // Whether this rank has the step's losses (a pipeline's last stage; every rank otherwise).
  bool counts_loss = true;
};

class StepDecider {
 public:
  // The gate starts from the host's state (a resumed run's scaler and update count).
  StepDecider(Device device, dist::Communicator& comm, const StepDeciderOptions& opt,
              const LossScalerState& scaler, int64_t optimizer_steps);

  void begin_step();                  // zeroes this rank's sums
  void add_loss(const Tensor& loss);  // a micro-batch's loss (f32 scalar on the device)
  // fp16: the backward's seed for a loss like `loss`: loss scale / micro-batches on the device,
  // as the last verdict left it.
  Tensor backward_seed(const Tensor& loss) const;
  // Once the gradients are complete: this rank's squared norm, every rank's sums gathered, the
  // verdict. No wait.
  void decide(dist::DataParallel& dp);
  // The same with the squared norm queued by the caller (added to device memory at `squares`).
  void decide(const std::function<void(double* squares)>& queue_squared_norm);
  const StepGate* gate() const { return static_cast<const StepGate*>(gate_.raw_data()); }

  int64_t pending() const { return pending_; }  // verdicts the host has not read
  bool full() const { return pending_ == opt_.capacity; }
  struct Verdicts {
    std::vector<StepRecord> steps;  // oldest first
    StepGate state;                 // after the newest
  };
  // The verdicts since the last read, and the gate: one wait for the device.
  Verdicts read();

 private:
  Device device_;
  dist::Communicator& comm_;
  StepDeciderOptions opt_;
  const DeviceBackend& backend_;
  Tensor gate_;     // one StepGate
  Tensor mine_;     // this rank's RankStepSums (f32 storage: gathered as bytes)
  Tensor all_;      // every rank's, in rank order
  Tensor records_;  // [capacity] StepRecord
  int64_t pending_ = 0;
};

}  // namespace tessera::train
