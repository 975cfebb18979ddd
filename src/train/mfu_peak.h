// What a run's MFU divides by: train.peak_tflops when set, else the datasheet peak of the
// training device for the compute dtype (core/device_peak.h: a GPU the table names, or this
// CPU's ISA x clock figure). The same denominator `tessera plan` and `bench_train_step` use.
#pragma once
#include <string>

#include "core/dtype.h"
#include "train/config.h"

namespace tessera::train {

struct MfuPeak {
  double tflops = 0;   // per device; 0: none known, so no MFU
  std::string source;  // "H100 SXM5 80GB datasheet, bf16", "train.peak_tflops", or "none: why"
};

// The datasheet peak of `device` for GEMMs in `compute`: the CPU's counts the OpenMP threads
// this thread will use; a GPU's is the table's entry for the name its runtime reports; none for
// a GPU the table does not hold (the source says so) and for the meta device.
MfuPeak datasheet_mfu_peak(Device device, DType compute);

// A run's: train.peak_tflops when set, else datasheet_mfu_peak, whose "none: ..." then says to
// set it (compute: train/trainer_setup.h's compute_dtype).
MfuPeak mfu_peak(const Config& cfg, Device device, DType compute);

}  // namespace tessera::train
