// The peak arithmetic MFU divides by, one table for the whole code base: a device's dense peak
// FLOP/s per GEMM operand dtype, from the vendor's datasheet (GPUs, the table in
// device_peak.cpp, each figure with its source) or from the ISA and the clock (this machine's
// CPU, cpu_peak.h). The trainer's metrics, `bench_train_step` and `tessera plan` all take their
// MFU denominator from here; what a kernel reaches in practice (a measured GEMM ceiling, the
// planner's calibration) is a different figure and is reported under its own name.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace tessera {

// One peak: FLOP/s and what it rests on ("H100 SXM5 80GB datasheet", "2 cores x 2.60 GHz x
// 1024 FLOP/cycle (AMX-BF16)").
struct PeakFigure {
  double flops = 0;  // 0: unknown
  std::string basis;
};

// Dense peaks (no 2:4 sparsity) of one device.
struct DevicePeak {
  std::string name;  // "H100 SXM5 80GB", "CPU: Intel(R) Xeon(R) Processor"
  PeakFigure f32;    // f32 on the vector units (GPUs' CUDA cores, the CPU's FMA units)
  PeakFigure tf32;   // GPUs' tensor cores in TF32; the CPU has none (its f32 figure)
  PeakFigure bf16;   // bf16 operands, f32 accumulation (tensor cores, AVX512-BF16 or AMX)
  PeakFigure f16;    // f16 operands, f32 accumulation

  // The peak a GEMM with operands of type t runs against in Tessera. f32 is the f32 figure,
  // never TF32: Tessera's CUDA GEMMs compute f32 in f32 (kernels/cuda/matmul.h: allow_tf32 is
  // never set), and the CPU has no TF32.
  const PeakFigure& gemm(DType t) const;
  // "H100 SXM5 80GB datasheet, bf16": what gemm(t) is, for messages.
  std::string describe(DType t) const;
};

// The built-in GPU kinds "a100" (A100 SXM4 80GB), "h100" (H100 SXM5 80GB), "h200" (H200 SXM
// 141GB), "b200" (B200 180GB); an Error naming them for any other kind.
const DevicePeak& gpu_datasheet(std::string_view kind);

// The built-in entry of a CUDA device by the name the runtime reports for it (cudaDeviceProp::
// name, what nvidia-smi prints): "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA
// H200", "NVIDIA B200". The name may be followed by " (...)", as in the backend's description
// ("NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)"). Any other device (an H100 PCIe, an H200 NVL, an
// A100 40GB: other clocks or parts this table does not hold): nullopt, never a guess.
std::optional<DevicePeak> gpu_datasheet_for_name(std::string_view runtime_name);

}  // namespace tessera
