// A run's checkpoint saves (docs/CHECKPOINTS.md): a save's files may still be written in the
// background while training goes on; finishing one is collective, so every rank finishes it at
// the same step. Reports each save on the progress line and counts what was saved and failed.
#pragma once
#include <cstdint>
#include <string>

#include "ckpt/checkpoint.h"
#include "dist/communicator.h"
#include "train/metrics.h"

namespace tessera::train {

class Checkpointing {
 public:
  // resumed_from: the checkpoint folder the run resumed from ("" for a fresh start), at
  // resumed_step.
  Checkpointing(dist::Communicator& comm, const std::string& run_dir, int64_t keep,
                ProgressLine& progress, std::string resumed_from, int64_t resumed_step);

  // Collective. Starts writing `snapshot` (take it after finish_pending(): a snapshot is the
  // state at one step, and one save is written at a time). In the foreground: the save's
  // result. In the background: ok for now, the outcome comes from a later finish.
  ckpt::SaveResult start(ckpt::Snapshot snapshot, bool async);
  // Collective: completes the save in progress, if any.
  void finish_pending();
  // Collective: whether every rank's background write is done (agreed, so all finish at the
  // same step).
  bool ready_to_finish();
  bool pending() const { return writer_.pending(); }

  // Whether a checkpoint of `step` exists (saved by this run or resumed from).
  bool has_step(int64_t step) const { return newest_step_ == step; }
  // "" when this run saved none.
  const std::string& last_saved() const { return last_saved_; }
  int64_t saved() const { return saved_; }
  int64_t failures() const { return failures_; }
  // For error messages: "the last checkpoint is <folder>" or "no checkpoint was saved".
  std::string describe_newest() const;

 private:
  ckpt::SaveResult finish();  // collective; reports the outcome

  dist::Communicator& comm_;
  ckpt::CheckpointWriter writer_;
  ProgressLine& progress_;
  std::string resumed_from_;
  int64_t newest_step_;  // of the newest checkpoint that exists, -1 none
  std::string last_saved_;
  int64_t saved_ = 0;
  int64_t failures_ = 0;
};

}  // namespace tessera::train
