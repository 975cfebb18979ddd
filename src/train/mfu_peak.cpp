#include "train/mfu_peak.h"

#include <omp.h>

#include <optional>

#include <fmt/format.h>

#include "core/backend.h"
#include "core/device_peak.h"
#include "kernels/cpu/matmul.h"

namespace tessera::train {
namespace {

MfuPeak from_figure(const DevicePeak& p, DType compute) {
  const PeakFigure& f = p.gemm(compute);
  if (f.flops <= 0) return {0, "none: " + f.basis};
  return {f.flops / 1e12, p.describe(compute)};
}

}  // namespace

MfuPeak datasheet_mfu_peak(Device device, DType compute) {
  if (device.is_cpu()) return from_figure(cpu::gemm_datasheet_peak(omp_get_max_threads()), compute);
  if (device.is_meta()) return {0, "none: the meta device computes nothing"};
  const DeviceBackend* b = find_backend(device.type);
  if (b == nullptr) return {0, "none: no backend for " + device.str()};
  const std::string name = b->describe(device.index);
  if (const std::optional<DevicePeak> p = gpu_datasheet_for_name(name))
    return from_figure(*p, compute);
  return {0, fmt::format("none: no datasheet peak for '{}'", name)};
}

MfuPeak mfu_peak(const Config& cfg, Device device, DType compute) {
  if (cfg.train.peak_tflops > 0) return {cfg.train.peak_tflops, "train.peak_tflops"};
  MfuPeak p = datasheet_mfu_peak(device, compute);
  if (p.tflops <= 0 && !device.is_meta()) p.source += " (set train.peak_tflops)";
  return p;
}

}  // namespace tessera::train
