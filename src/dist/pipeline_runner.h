// One training step's forwards and backwards on this rank's pipeline stages, in the order a
// schedule gives (dist/pipeline_schedule.h), with each stage's output activation and its
// gradient moved between neighbouring stages by the pipeline communicator's batched
// point-to-point transfers. The model, the data and the gradient engine are the caller's: it
// supplies each stage's forward and is told before each backward.
#pragma once
#include <functional>
#include <vector>

#include "core/tensor.h"
#include "dist/communicator.h"
#include "dist/pipeline_schedule.h"

namespace tessera::dist::pipeline {

struct StageWork {
  // Stage s's forward on micro-batch i: from the previous stage's output x (undefined for stage
  // 0) to this stage's output; on the last stage, the micro-batch's loss (a scalar).
  std::function<Tensor(int stage, int micro, const Tensor& x)> forward;
  // The shape of stage s's output for one micro-batch (what its receiver allocates).
  std::function<Shape(int stage)> output_shape;
  // Called before each backward; `last` for those of the final micro-batch, during which the
  // data-parallel engine communicates gradients (DataParallel::begin_micro_batch).
  std::function<void(int micro, bool last)> before_backward;
  // The last stage's backward starts from loss x loss_scale / m; or, when backward_seed is set,
  // from the gradient it gives for the loss (a step decided on the device: fp16's loss scale /
  // m as the device last decided it, train/step_decider.h).
  float loss_scale = 1;
  std::function<Tensor(const Tensor& loss)> backward_seed;
};

struct StepStats {
  std::vector<Tensor> losses;  // the last stage's micro-batch losses (detached), else empty
  double transfer_s = 0;       // time in transfers (waiting for neighbours included)
  double compute_s = 0;        // time in forwards and backwards
  int64_t sent_bytes = 0;      // activations and gradients this rank sent
};

// Runs rank pp.rank()'s steps of `schedule` (schedule.p == pp.world_size()); activations are
// f32 on `device`. Every rank of pp must run the same schedule.
StepStats run_schedule(const Schedule& schedule, Communicator& pp, Device device,
                       const StageWork& work);

}  // namespace tessera::dist::pipeline
