// AdamW's bias corrections for a step decided on the device (StepGate, core/backend.h): the
// host cannot pass the step's scalars when it does not know whether earlier steps were skipped,
// so it uploads 1 - beta1^t and 1 - beta2^t for every t the step could have (f64, computed as
// AdamWScalars::at computes them) and the update kernel picks its t's pair.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace tessera {

class DeviceBiasCorrections {
 public:
  // Device pairs (1 - beta1^t, 1 - beta2^t) for t = 0 .. at least max_t, on device d. Grown by
  // doubling, each growth one upload that does not wait for the device.
  const double* covering(int64_t max_t, float beta1, float beta2, Device d);

 private:
  Tensor table_;  // i64 storage holding the f64 pairs (Tensor has no f64)
  int64_t max_t_ = -1;
  float beta1_ = 0, beta2_ = 0;
};

}  // namespace tessera
