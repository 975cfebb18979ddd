#include "train/checkpointing.h"

#include <utility>

#include <fmt/format.h>

namespace tessera::train {

Checkpointing::Checkpointing(dist::Communicator& comm, const std::string& run_dir, int64_t keep,
                             ProgressLine& progress, std::string resumed_from, int64_t resumed_step)
    : comm_(comm),
      writer_(comm, run_dir, keep),
      progress_(progress),
      resumed_from_(std::move(resumed_from)),
      newest_step_(resumed_from_.empty() ? -1 : resumed_step) {}

ckpt::SaveResult Checkpointing::start(ckpt::Snapshot snapshot, bool async) {
  const int64_t step = snapshot.step;
  writer_.start(std::move(snapshot), async);
  return async ? ckpt::SaveResult{true, step, "", ""} : finish();
}

void Checkpointing::finish_pending() {
  if (writer_.pending()) finish();
}

bool Checkpointing::ready_to_finish() {
  const bool mine = writer_.files_done();
  return comm_.world_size() == 1 ? mine : comm_.sum_f64(mine ? 0 : 1) == 0;
}

std::string Checkpointing::describe_newest() const {
  if (last_saved_.empty() && resumed_from_.empty()) return "no checkpoint was saved";
  return "the last checkpoint is " + (last_saved_.empty() ? resumed_from_ : last_saved_);
}

ckpt::SaveResult Checkpointing::finish() {
  ckpt::SaveResult r = writer_.finish();
  if (r.ok) {
    newest_step_ = r.step;
    last_saved_ = r.path;
    ++saved_;
    progress_.message(fmt::format("checkpoint: step {} -> {}", r.step, r.path));
  } else {
    ++failures_;
    progress_.message(
        fmt::format("checkpoint: saving step {} failed: {} (earlier checkpoints are intact; "
                    "training continues)",
                    r.step, r.error));
  }
  return r;
}

}  // namespace tessera::train
