// The training loop: from a resolved Config to a run folder holding metrics.jsonl, the final
// weights (model.safetensors), the resolved config (config.toml) and the curves (loss.png).
#pragma once
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "train/config.h"

namespace tessera::train {

struct RunOptions {
  std::string out_dir;     // created if missing
  bool plot = true;        // draw loss.png at the end (needs gnuplot)
  FILE* console = stdout;  // progress and messages
};

struct RunSummary {
  int64_t steps = 0;
  double final_loss = 0;    // training loss of the last step
  nlohmann::json last_eval; // the final evaluation's metrics
  double seconds = 0;
  double items_per_s = 0;   // tokens or samples per second over the run (after the first step)
};

RunSummary run_training(const Config& cfg, const RunOptions& opt);

}  // namespace tessera::train
