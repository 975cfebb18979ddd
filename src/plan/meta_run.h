// Runs the real trainer on the meta device (core/meta_device.h) as one rank of a job that does
// not exist: the model, its split over tensor / pipeline / context ranks, autograd, the
// optimizer and DDP / ZeRO execute unchanged over a dist::MetaCommunicator, compute nothing,
// and leave what the planner needs: the allocator's peak (the real allocator's bookkeeping for
// the same requests), the persistent parts (weights, gradients, optimizer state) and one
// steady-state step's kernels, collectives and waits, in order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/meta_device.h"
#include "dist/data_parallel.h"
#include "train/config.h"
#include "train/trainer.h"

namespace tessera::plan {

struct RankRun {
  int rank = 0;
  int pp_stage = 0;
  AllocatorStats memory;          // the meta allocator's at the end: peak_in_use, reserved
  dist::MemoryReport persistent;  // weights, gradients, optimizer state kept between steps
  std::vector<meta::Event> step;  // the last step's events (the first one also sets things up)
  train::RunSummary summary;      // the trainer's own account (bytes per mesh axis, ...)
};

// Runs `steps` (>= 2) training steps of `cfg` as rank `rank` of `world` on the meta device, with
// the allocator bookkeeping of `model`. The config's data is replaced by random token ids of the
// same shape (no file is read), and evaluation, samples, checkpoints, initial-weight files and
// plots are off: a plan is of training steps. Errors are the trainer's (a layout the world does
// not divide, a batch that does not split), naming the config keys.
RankRun run_rank_on_meta(const train::Config& cfg, int rank, int world, meta::AllocatorModel model,
                         int64_t steps = 2);

// `cfg` as the planner runs it on `device` ("meta", or "cpu" for run_on_this_cpu) for `steps`
// steps: random token ids of the data's shape in place of its files (no file is read), and no
// evaluation, samples, checkpoints, initial-weight files, plots or warm-up.
train::Config planned_config(const train::Config& cfg, int64_t steps, const std::string& device);

// One kernel of a step run on this CPU and what it took: from its launch to the next event,
// so the work around it (autograd, allocation, dispatch) is counted with it.
struct TimedKernel {
  meta::KernelCost cost;
  double seconds = 0;
};

struct TimedStep {
  std::vector<TimedKernel> kernels;  // in order
  double before_first_kernel = 0;    // from the step's start to its first kernel (and any
                                     // time after collectives or waits, which a CPU run of
                                     // one rank has none of)
  double seconds = 0;                // the whole step
};

// Runs `steps` (>= 2) training steps of `cfg` (one rank, as planned_config) on this machine's
// CPU with a timed trace; returns the steady-state step: kernel by kernel the fastest of steps
// 1 .. steps - 1 (step 0 builds oneDNN primitives and touches fresh pages). What the local
// calibration fits (calibrate.h).
TimedStep run_on_this_cpu(const train::Config& cfg, int64_t steps = 3);

// The same run without a trace of its own (a stand-in for another rank, calibrate.h).
void run_untimed_on_this_cpu(const train::Config& cfg, int64_t steps);

// The ranks whose runs differ in what the planner reports: one per pipeline stage (the first
// rank of each; ranks of one stage differ only in which shard of ZeRO's buffers they own, by at
// most one alignment unit).
std::vector<int> representative_ranks(const train::Config& cfg, int world);

// Model FLOPs of one training step of the whole job (forward + backward, the global batch), as
// the metrics count them (nn::decoder_flops_per_token x tokens): what MFU divides by.
double model_flops_per_step(const train::Config& cfg);

}  // namespace tessera::plan
