// The peaks MFU divides by (core/device_peak.h, core/cpu_peak.h): the GPU datasheet table and
// the runtime names that select its entries, the CPU formula on fixture /proc/cpuinfo texts,
// and this machine's CPU.
#include <gtest/gtest.h>

#include "core/cpu_peak.h"
#include "core/device_peak.h"
#include "gradcheck.h"
#include "kernels/cpu/matmul.h"

using namespace tessera;
using tessera::testing::expect_error;

namespace {

// Two processors of a KVM guest on a Sapphire Rapids host, as this project's machine shows
// them (flags shortened to those that matter and a few neighbours); no cpufreq there.
constexpr const char* kSapphireRapidsVm = R"(processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
cpu MHz		: 2599.998
physical id	: 0
siblings	: 2
core id		: 0
cpu cores	: 2
flags		: fpu sse2 ssse3 fma avx f16c avx2 avx512f avx512dq avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
cpu MHz		: 2599.998
physical id	: 0
siblings	: 2
core id		: 1
cpu cores	: 2
flags		: fpu sse2 ssse3 fma avx f16c avx2 avx512f avx512dq avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8
)";

// An AVX2 desktop part with two hyperthreads per core: 4 processors, 2 physical cores.
std::string avx2_with_hyperthreads() {
  std::string s;
  for (int p = 0; p < 4; ++p)
    s += "processor\t: " + std::to_string(p) +
         "\nmodel name\t: Some AVX2 CPU\ncpu MHz\t\t: 800.000\nphysical id\t: 0\ncore id\t\t: " +
         std::to_string(p % 2) + "\nflags\t\t: fpu sse2 avx fma avx2 f16c\n\n";
  return s;
}

TEST(device_peak, ParsesTheSapphireRapidsVm) {
  const CpuInfo c = parse_cpu_info(kSapphireRapidsVm, "");
  EXPECT_EQ(c.model, "Intel(R) Xeon(R) Processor");
  EXPECT_EQ(c.cores, 2);
  EXPECT_DOUBLE_EQ(c.clock_hz, 2599.998e6);
  EXPECT_FALSE(c.clock_is_max);  // "cpu MHz": nominal
  EXPECT_TRUE(c.fma && c.avx512f && c.avx512_bf16 && c.amx_bf16);
}

TEST(device_peak, TheMaxClockWinsWhereCpufreqHasIt) {
  const CpuInfo c = parse_cpu_info(kSapphireRapidsVm, "3800000\n");  // kHz
  EXPECT_DOUBLE_EQ(c.clock_hz, 3.8e9);
  EXPECT_TRUE(c.clock_is_max);
}

TEST(device_peak, HyperthreadsAreNotCores) {
  const CpuInfo c = parse_cpu_info(avx2_with_hyperthreads(), "");
  EXPECT_EQ(c.cores, 2);
  EXPECT_TRUE(c.fma);
  EXPECT_FALSE(c.avx512f || c.avx512_bf16 || c.amx_bf16);
  // No "physical id" / "core id" (some VMs and architectures): every processor is a core.
  const CpuInfo bare = parse_cpu_info("processor : 0\nprocessor : 1\nprocessor : 2\n", "");
  EXPECT_EQ(bare.cores, 3);
}

TEST(device_peak, CpuPeakIsCoresTimesClockTimesFlopsPerCycle) {
  const CpuInfo c = parse_cpu_info(kSapphireRapidsVm, "");
  const double per_core = 2599.998e6;
  const DevicePeak amx = cpu_peak(c, 2, true);
  EXPECT_DOUBLE_EQ(amx.f32.flops, 2 * per_core * 64);     // AVX-512, two FMA units
  EXPECT_DOUBLE_EQ(amx.bf16.flops, 2 * per_core * 1024);  // AMX-BF16
  EXPECT_DOUBLE_EQ(amx.f16.flops, amx.f32.flops);         // f16 widened to f32
  EXPECT_DOUBLE_EQ(amx.tf32.flops, amx.f32.flops);        // no TF32 on the CPU
  EXPECT_EQ(amx.bf16.basis, "CPU: 2 cores x 2.60 GHz (nominal) x 1024 FLOP/cycle (AMX-BF16)");
  EXPECT_EQ(amx.describe(DType::f32),
            "CPU: 2 cores x 2.60 GHz (nominal) x 64 FLOP/cycle (AVX-512 FMA), f32");
  // oneDNN not on AMX: AVX512-BF16's vdpbf16ps.
  EXPECT_DOUBLE_EQ(cpu_peak(c, 2, false).bf16.flops, 2 * per_core * 128);
  // Threads beyond the cores add nothing; fewer use fewer.
  EXPECT_DOUBLE_EQ(cpu_peak(c, 8, true).f32.flops, amx.f32.flops);
  EXPECT_DOUBLE_EQ(cpu_peak(c, 1, true).f32.flops, amx.f32.flops / 2);
}

TEST(device_peak, Avx2RunsBf16AtTheF32Rate) {
  const DevicePeak p = cpu_peak(parse_cpu_info(avx2_with_hyperthreads(), ""), 4, true);
  EXPECT_DOUBLE_EQ(p.f32.flops, 2 * 800e6 * 32);
  EXPECT_DOUBLE_EQ(p.bf16.flops, p.f32.flops);  // oneDNN converts bf16 to f32 there
}

TEST(device_peak, UnknownIsaOrClockGivesNoPeak) {
  const DevicePeak arm =
      cpu_peak(parse_cpu_info("processor : 0\nFeatures : fp asimd\nBogoMIPS : 50.00\n", "2000000"),
               1, false);
  EXPECT_EQ(arm.f32.flops, 0);
  EXPECT_NE(arm.f32.basis.find("no FMA unit"), std::string::npos) << arm.f32.basis;
  const DevicePeak no_clock =
      cpu_peak(parse_cpu_info("processor : 0\nflags : fma avx2\n", ""), 1, false);
  EXPECT_EQ(no_clock.f32.flops, 0);
  EXPECT_NE(no_clock.f32.basis.find("clock unknown"), std::string::npos) << no_clock.f32.basis;
}

TEST(device_peak, GpuTableHoldsTheDenseDatasheetFigures) {
  const DevicePeak& h = gpu_datasheet("h100");
  EXPECT_EQ(h.name, "H100 SXM5 80GB");
  EXPECT_DOUBLE_EQ(h.bf16.flops, 989.5e12);  // 1,979 with sparsity
  EXPECT_DOUBLE_EQ(h.f16.flops, 989.5e12);
  EXPECT_DOUBLE_EQ(h.tf32.flops, 494.5e12);
  // f32 GEMMs are f32 in Tessera, never TF32.
  EXPECT_DOUBLE_EQ(h.gemm(DType::f32).flops, 67e12);
  EXPECT_EQ(h.describe(DType::bf16), "H100 SXM5 80GB datasheet, bf16");
  EXPECT_DOUBLE_EQ(gpu_datasheet("a100").bf16.flops, 312e12);
  EXPECT_DOUBLE_EQ(gpu_datasheet("h200").bf16.flops, 989.5e12);
  EXPECT_DOUBLE_EQ(gpu_datasheet("b200").bf16.flops, 2250e12);
  expect_error([] { gpu_datasheet("v100"); }, {"v100", "a100, h100, h200, b200"});
}

TEST(device_peak, RuntimeNamesSelectTheirEntryAndNothingElse) {
  auto bf16_of = [](const char* name) {
    const std::optional<DevicePeak> p = gpu_datasheet_for_name(name);
    return p ? p->bf16.flops : -1.0;
  };
  EXPECT_DOUBLE_EQ(bf16_of("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_DOUBLE_EQ(bf16_of("NVIDIA H100 80GB HBM3"), 989.5e12);
  EXPECT_DOUBLE_EQ(bf16_of("NVIDIA H200"), 989.5e12);
  EXPECT_DOUBLE_EQ(bf16_of("NVIDIA B200"), 2250e12);
  // The backend's description starts with the runtime's name.
  EXPECT_DOUBLE_EQ(bf16_of("NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)"), 989.5e12);
  // Other parts (clocks, power and sometimes units differ): no peak rather than a guess.
  for (const char* other :
       {"NVIDIA H200 NVL", "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA A100-SXM4-40GB",
        "NVIDIA A100 80GB PCIe", "NVIDIA GeForce RTX 4090", "", "H100"})
    EXPECT_FALSE(gpu_datasheet_for_name(other).has_value()) << other;
}

// This machine: its CPU has a peak, bf16 no lower than f32, and the threads count.
TEST(device_peak, ThisCpuHasAPositivePeak) {
  const CpuInfo& c = this_cpu_info();
  EXPECT_GT(c.cores, 0);
  EXPECT_GT(c.clock_hz, 0);
  const DevicePeak p = cpu::gemm_datasheet_peak(1);
  EXPECT_GT(p.f32.flops, 0) << p.f32.basis;
  EXPECT_GE(p.bf16.flops, p.f32.flops) << p.bf16.basis;
  EXPECT_NE(p.name.find(c.model), std::string::npos) << p.name;
  EXPECT_FALSE(cpu::gemm_implementation(DType::bf16).empty());
  std::cerr << "this CPU: " << p.name << "; f32 " << p.f32.flops / 1e9 << " GFLOP/s ("
            << p.f32.basis << "), bf16 " << p.bf16.flops / 1e9 << " GFLOP/s (" << p.bf16.basis
            << "); oneDNN bf16: " << cpu::gemm_implementation(DType::bf16) << "\n";
}

}  // namespace
