// The glue between the training loop and a checkpoint's trainer_state.json: what the loop and
// its task hold (step, counters, data cursor, RNG streams) in, and back out on resume.
#pragma once
#include <cstdint>

#include "ckpt/manifest.h"
#include "dist/data_parallel.h"
#include "optim/loss_scaler.h"
#include "train/task.h"

namespace tessera::ckpt {

// The loop's own counters at a step boundary.
struct LoopState {
  int64_t step = 0;  // steps completed
  int64_t bad_total = 0;
  int64_t bad_in_a_row = 0;
  double last_lr = 0;
  LossScalerState loss_scaler;             // scale 1 and no skips without fp16
  std::optional<uint64_t> samples_digest;  // the run's (TrainerState::samples_digest)
};

// Collective (every rank's optimizer range is gathered): the trainer state rank 0 writes.
TrainerState capture_trainer_state(const LoopState& loop, train::Task& task,
                                   dist::DataParallel& dp);

// Puts the task's data cursor and RNG streams where the checkpoint had them and returns the
// loop counters. A stream the checkpoint lacks, or has and the task lacks, is an Error naming
// the file (`path`): resuming without it would not continue the same run.
LoopState restore_run_state(const TrainerState& state, train::Task& task, const std::string& path);

}  // namespace tessera::ckpt
