// This machine's CPU as a DevicePeak (device_peak.h). CPU vendors publish FLOP per cycle per
// core, not a figure per part, so the "datasheet" peak is computed:
//   peak = cores used x clock x FLOP per cycle per core of the unit that runs the GEMM,
// with cores used = the OpenMP threads, at most the physical cores. FLOP per cycle per core:
//   f32, AVX2 + FMA:  2 FMA units x  8 lanes x 2 (multiply + add) =   32
//   f32, AVX-512:     2 FMA units x 16 lanes x 2                  =   64
//   bf16, AVX512-BF16 (vdpbf16ps): 2 units x 32 bf16 products x 2 =  128
//   bf16, AMX-BF16:   1024 (Intel's published figure per core)
// Two FMA units is an assumption the flags cannot check (some Skylake-SP Silver / Bronze parts
// have one: half the f32 figure). bf16 counts AMX only when oneDNN really runs bf16 GEMMs there
// (the caller says, from kernels/cpu/matmul.h); without AVX512-BF16 or AMX oneDNN converts bf16
// to f32, so bf16 = f32. f16 operands are widened to f32 (kernels/cpu/matmul.h): f16 = f32; the
// CPU has no TF32: tf32 = f32.
//
// The clock: cpufreq's cpuinfo_max_freq (the highest turbo clock, a single core's) where the
// kernel has it; else (virtual machines) /proc/cpuinfo's "cpu MHz", the nominal (or current)
// clock, not turbo: a CPU that runs above it can then exceed 100% MFU.
#pragma once
#include <string>
#include <string_view>

#include "core/device_peak.h"

namespace tessera {

struct CpuInfo {
  std::string model;          // "model name": "Intel(R) Xeon(R) Processor"
  int cores = 0;              // physical cores: distinct (physical id, core id); else processors
  double clock_hz = 0;        // 0: unknown
  bool clock_is_max = false;  // from cpuinfo_max_freq; false: "cpu MHz" (nominal, not turbo)
  bool fma = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false;
};

// The text of /proc/cpuinfo and of /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq (kHz;
// empty where there is no such file). Pure: tests pass fixture strings.
CpuInfo parse_cpu_info(std::string_view proc_cpuinfo, std::string_view max_freq_khz);

// This machine's, read once per process.
const CpuInfo& this_cpu_info();

// The peaks of `threads` OpenMP threads on `cpu`; bf16_on_amx: oneDNN runs bf16 GEMMs on AMX.
// A figure is 0 (its basis says why) when the clock or a known FMA unit is missing.
DevicePeak cpu_peak(const CpuInfo& cpu, int threads, bool bf16_on_amx);

}  // namespace tessera
