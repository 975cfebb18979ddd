// Runs the real trainer on the meta device (core/meta_device.h) as one rank of a job that does
// not exist: the model, its split over tensor / pipeline / context ranks, autograd, the
// optimizer and DDP / ZeRO execute unchanged over a dist::MetaCommunicator, compute nothing,
// and leave what the planner needs: the allocator's peak (the real allocator's bookkeeping for
// the same requests), the persistent parts (weights, gradients, optimizer state) and one
// steady-state step's kernels, collectives and waits, in order.
#pragma once
#include <cstdint>
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

// The ranks whose runs differ in what the planner reports: one per pipeline stage (the first
// rank of each; ranks of one stage differ only in which shard of ZeRO's buffers they own, by at
// most one alignment unit).
std::vector<int> representative_ranks(const train::Config& cfg, int world);

// Model FLOPs of one training step of the whole job (forward + backward, the global batch), as
// the metrics count them (nn::decoder_flops_per_token x tokens): what MFU divides by.
double model_flops_per_step(const train::Config& cfg);

}  // namespace tessera::plan
