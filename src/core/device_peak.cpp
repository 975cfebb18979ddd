#include "core/device_peak.h"

#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace tessera {

const PeakFigure& DevicePeak::gemm(DType t) const {
  switch (t) {
    case DType::bf16:
      return bf16;
    case DType::f16:
      return f16;
    default:
      return f32;
  }
}

std::string DevicePeak::describe(DType t) const {
  return fmt::format("{}, {}", gemm(t).basis, dtype_name(t));
}

namespace {

constexpr double kTera = 1e12;

struct GpuKind {
  std::string_view kind;          // "h100", as the planner's cluster names spell it
  std::string_view runtime_name;  // cudaDeviceProp::name
  std::string_view name;          // the part the figures are for
  double f32, tf32, bf16, f16;    // dense TFLOP/s
};

// Dense figures: datasheets that quote "with sparsity" figures (2:4 structured sparsity) are
// halved here. Sources:
//
// A100 SXM4 80GB. A100 datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/
// Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): FP32 19.5 TFLOPS;
// TF32 tensor 156 TFLOPS, BF16 / FP16 tensor 312 TFLOPS (dense; twice that with sparsity).
//
// H100 SXM5 80GB. H100 datasheet (https://www.nvidia.com/en-us/data-center/h100/, "Technical
// Specifications", SXM column): FP32 67 TFLOPS; TF32 tensor 989 TFLOPS, BF16 / FP16 tensor
// 1,979 TFLOPS, all "with sparsity" (dense: half, 494.5 and 989.5).
//
// H200 SXM 141GB. H200 datasheet (https://www.nvidia.com/en-us/data-center/h200/, SXM column):
// the H100's arithmetic (FP32 67 TFLOPS; TF32 989, BF16 / FP16 1,979 TFLOPS with sparsity).
//
// B200 180GB (HGX / DGX B200, 1,000 W parts). HGX B200 (https://www.nvidia.com/en-us/
// data-center/hgx/, per 8 GPUs, tensor figures with sparsity): FP32 600 TFLOPS (75 per GPU);
// TF32 18 PFLOPS (1.125 dense per GPU); FP16 / BF16 36 PFLOPS (2.25 dense per GPU).
constexpr GpuKind kGpus[] = {
    {"a100", "NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB", 19.5, 156, 312, 312},
    {"h100", "NVIDIA H100 80GB HBM3", "H100 SXM5 80GB", 67, 494.5, 989.5, 989.5},
    {"h200", "NVIDIA H200", "H200 SXM 141GB", 67, 494.5, 989.5, 989.5},
    {"b200", "NVIDIA B200", "B200 180GB", 75, 1125, 2250, 2250},
};

DevicePeak peak_of(const GpuKind& g) {
  const std::string basis = fmt::format("{} datasheet", g.name);
  return DevicePeak{std::string(g.name),
                    {g.f32 * kTera, basis},
                    {g.tf32 * kTera, basis},
                    {g.bf16 * kTera, basis},
                    {g.f16 * kTera, basis}};
}

// kGpus as DevicePeaks, in the same order (built once: the references handed out stay valid).
const std::vector<DevicePeak>& peaks() {
  static const std::vector<DevicePeak> table = [] {
    std::vector<DevicePeak> t;
    for (const GpuKind& g : kGpus) t.push_back(peak_of(g));
    return t;
  }();
  return table;
}

}  // namespace

const DevicePeak& gpu_datasheet(std::string_view kind) {
  for (size_t i = 0; i < std::size(kGpus); ++i)
    if (kGpus[i].kind == kind) return peaks()[i];
  fail("device peak: unknown GPU kind '{}': expected one of a100, h100, h200, b200", kind);
}

std::optional<DevicePeak> gpu_datasheet_for_name(std::string_view runtime_name) {
  for (size_t i = 0; i < std::size(kGpus); ++i) {
    const std::string_view n = kGpus[i].runtime_name;
    // The name alone, or followed by the description's " (": "NVIDIA H200 NVL" is another part.
    const bool named =
        runtime_name.starts_with(n) &&
        (runtime_name.size() == n.size() || runtime_name.substr(n.size()).starts_with(" ("));
    if (named) return peaks()[i];
  }
  return std::nullopt;
}

}  // namespace tessera
