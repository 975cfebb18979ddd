#include "ckpt/run_state.h"

#include <cstdio>

#include "ckpt/checkpoint.h"
#include "core/error.h"

namespace tessera::ckpt {

TrainerState capture_trainer_state(const LoopState& loop, train::Task& task,
                                   dist::DataParallel& dp) {
  dist::Communicator& comm = dp.comm();
  const dist::TrainingStateView v = dp.training_state();
  TrainerState s;
  s.step = loop.step;
  s.world_size = comm.world_size();
  s.zero_stage = dp.zero_stage();
  const data::SamplerState cursor = task.data_state();
  s.data = {cursor.seed, cursor.offset};
  for (const auto& [name, g] : task.generators()) s.rngs[name] = {g->seed(), g->offset()};
  s.bad_steps_total = loop.bad_total;
  s.bad_steps_in_a_row = loop.bad_in_a_row;
  s.last_lr = loop.last_lr;
  s.samples_digest = loop.samples_digest;
  s.loss_scale = loop.loss_scaler.scale;
  s.loss_scale_clean_steps = loop.loss_scaler.clean_steps;
  s.loss_scale_skipped_steps = loop.loss_scaler.skipped_steps;
  s.optimizer = v.optimizer;
  s.optimizer_steps = v.optimizer_steps;
  s.flat_numel = v.numel;
  if (dp.zero_stage() == 0) {
    s.optimizer_shards.push_back({optimizer_file_name(0), 0, v.numel});
  } else {
    const std::vector<std::string> ranges =
        comm.all_gather_bytes(fmt::format("{} {}", v.state_begin, v.state_end));
    for (size_t r = 0; r < ranges.size(); ++r) {
      OptimizerShard sh{optimizer_file_name(int(r)), 0, 0};
      TS_CHECK(std::sscanf(ranges[r].c_str(), "%ld %ld", &sh.begin, &sh.end) == 2,
               "checkpoint: rank {} sent optimizer range '{}'", r, ranges[r]);
      s.optimizer_shards.push_back(sh);
    }
  }
  return s;
}

LoopState restore_run_state(const TrainerState& s, train::Task& task, const std::string& path) {
  task.set_data_state({s.data.seed, s.data.offset});
  auto gens = task.generators();
  TS_CHECK(gens.size() == s.rngs.size(),
           "checkpoint file '{}' has {} RNG streams, but this task draws from {}", path,
           s.rngs.size(), gens.size());
  for (const auto& [name, g] : gens) {
    auto it = s.rngs.find(name);
    TS_CHECK(it != s.rngs.end(), "checkpoint file '{}': RNG stream '{}' is missing", path, name);
    g->set_state(it->second.seed, it->second.offset);
  }
  LoopState loop;
  loop.step = s.step;
  loop.bad_total = s.bad_steps_total;
  loop.bad_in_a_row = s.bad_steps_in_a_row;
  loop.last_lr = s.last_lr;
  loop.loss_scaler = {float(s.loss_scale), s.loss_scale_clean_steps, s.loss_scale_skipped_steps};
  loop.samples_digest = s.samples_digest;
  return loop;
}

}  // namespace tessera::ckpt
