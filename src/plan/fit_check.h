// Before a GPU run: whether the plan of the config on the launch's ranks fits the device's
// memory, and if not, the first of a few settings that would make it fit. Every rank computes
// the same verdict from the same inputs, so all refuse together rather than one hanging.
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
// layout does not divide) are the trainer's, thrown.
FitCheck check_fit(const train::Config& cfg, int world, double capacity);

// The memory of CUDA device `index` (modulo the devices there are: a launcher's local rank) in
// bytes, as the backend reports it (DeviceBackend::memory_bytes); 0 when there is no device.
double cuda_device_memory_bytes(int index);

}  // namespace tessera::plan
