// Before a run: whether the plan of the config on the launch's ranks fits each rank's memory
// (a GPU's, or a CPU rank's share of its machine's), and if not, the first of a few settings
// that would make it fit. The trainer asks it on every rank (train::RunOptions::fit_check) and
// gathers the verdicts, so all refuse together rather than one hanging.
#pragma once
#include <string>
#include <vector>

#include "train/config.h"

namespace tessera::plan {

struct FitCheck {
  bool fits = true;
  double predicted = 0;  // bytes: the largest per-rank total of the plan
  double capacity = 0;   // bytes per device
  // When it does not fit: the overrides that make it fit (empty when none was found), the
  // prediction with them, and the error message that names both.
  std::vector<std::string> fix;
  double fixed_predicted = 0;
  std::string message;
};

// Plans `cfg` on `world` ranks of devices holding `capacity` bytes each (the memory figures do
// not depend on the interconnect). When it does not fit, tries in order, each on top of the
// previous: model.recompute = "blocks"; doubling train.micro_batches while the batch splits over
// dp x micro-batches; parallel.zero_stage up to 3 (dp > 1); parallel.sequence_parallel = 1
// (tp > 1), and stops at the first that fits. Errors of the config's own layout (a world its
// layout does not divide) are the trainer's, thrown. A config on train.device = "cpu" is
// planned with the host allocator's books and the CPU's ops (as `--cluster local`).
// capacity_text describes the capacity in the message ("" = "N GiB of device memory").
FitCheck check_fit(const train::Config& cfg, int world, double capacity,
                   const std::string& capacity_text = "");

}  // namespace tessera::plan
