#include "plan/cluster.h"

#include "core/host_cores.h"

#include <omp.h>

#include <algorithm>
#include <charconv>

#include "core/error.h"
#include "kernels/cpu/matmul.h"
#include "plan/calibrate.h"

namespace tessera::plan {

double GemmEfficiency::at(int64_t m, int64_t n, int64_t k) const {
  auto s = [this](int64_t d) {
    double x = double(std::max<int64_t>(d, 1));
    return x / (x + half_dim);
  };
  return peak_fraction * s(m) * s(n) * s(k);
}

double DeviceSpec::matmul_peak(DType t) const {
  switch (t) {
    case DType::bf16:
      return peak_bf16;
    case DType::f16:
      return peak_f16;
    case DType::f32:
      return f32_gemm_tf32 ? peak_tf32 : peak_f32;
    default:
      return peak_f32;
  }
}

namespace {

constexpr double kGiga = 1e9;
// HBM capacities are binary: an "80GB" part holds 80 GiB (nvidia-smi reports 81920 MiB, less
// what the driver reserves).
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// What no datasheet gives, shared by the GPU nodes below; estimates to be replaced by
// measurements (docs/PLAN.md, "Cost model"):
//   - streaming kernels reach ~85% of HBM bandwidth (STREAM-like copies on A100 / H100);
//   - element-wise arithmetic reaches ~70% of the f32 vector peak;
//   - a kernel costs at least ~4 us (launch and tail, no CUDA graphs);
//   - NCCL reaches ~80% of NVLink's per-direction bandwidth as bus bandwidth and ~90% of a
//     NIC's line rate; one ring step costs ~2 us over NVSwitch and ~5 us over InfiniBand.
// The arithmetic is the datasheet's (core/device_peak.cpp, with its sources), for timing and
// for MFU alike.
DeviceSpec gpu(std::string_view kind, double bandwidth, double memory) {
  DeviceSpec d;
  d.datasheet = gpu_datasheet(kind);
  d.name = d.datasheet.name;
  d.peak_f32 = d.datasheet.f32.flops;
  d.peak_tf32 = d.datasheet.tf32.flops;
  d.peak_bf16 = d.datasheet.bf16.flops;
  d.peak_f16 = d.datasheet.f16.flops;
  d.memory_bandwidth = bandwidth;
  d.memory_bytes = memory;
  d.bandwidth_fraction = 0.85;
  d.vector_fraction = 0.7;
  d.min_kernel_seconds = 4e-6;
  d.f32_gemm_tf32 =
      false;  // Tessera's f32 GEMMs are f32 (kernels/cuda/matmul.h: allow_tf32 is off)
  return d;
}

LinkSpec nvlink(std::string name, double per_direction) {
  return LinkSpec{std::move(name), per_direction, 2e-6, 0.8};
}

LinkSpec nic(std::string name, double gigabits) {
  return LinkSpec{std::move(name), gigabits * kGiga / 8, 5e-6, 0.9};
}

ClusterSpec node(DeviceSpec d, LinkSpec intra, LinkSpec inter, std::string source) {
  ClusterSpec c;
  c.device = std::move(d);
  c.gpus_per_node = 8;
  c.nodes = 1;
  c.intra = std::move(intra);
  c.inter = std::move(inter);
  c.source = std::move(source);
  return c;
}

// NVIDIA A100 SXM4 80GB, DGX A100 node.
// A100 datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/
// nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): 80GB HBM2e at 2,039 GB/s; NVLink 600
// GB/s (both directions together: 300 GB/s each way); its arithmetic: core/device_peak.cpp.
// DGX A100 datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/
// nvidia-dgx-a100-datasheet.pdf): 8 x A100, 6 NVSwitches, 8 x single-port ConnectX-6 VPI
// 200 Gb/s HDR InfiniBand for the compute fabric.
ClusterSpec a100_node() {
  DeviceSpec d = gpu("a100", 2039 * kGiga, 80 * kGiB);
  d.gemm = {0.8, 128};  // cuBLAS reaches ~250 of 312 bf16 TFLOPS on large GEMMs
  d.attention_efficiency = 0.4;
  return node(std::move(d), nvlink("NVLink 3 / NVSwitch", 300 * kGiga),
              nic("HDR InfiniBand 200 Gb/s (ConnectX-6)", 200),
              "DGX A100: 8 x A100 SXM4 80GB on NVSwitch, 8 x 200 Gb/s HDR InfiniBand "
              "(A100 and DGX A100 datasheets)");
}

// NVIDIA H100 SXM5 80GB, DGX H100 node.
// H100 datasheet (https://www.nvidia.com/en-us/data-center/h100/, "Technical
// Specifications", SXM column): 80GB HBM3 at 3.35 TB/s; NVLink 900 GB/s (both directions: 450
// GB/s each way); its arithmetic: core/device_peak.cpp.
// DGX H100 / H200 (https://docs.nvidia.com/dgx-basepod/reference-architecture-infrastructure-
// foundation-enterprise-ai/latest/core-components.html): 8 GPUs, 4 NVSwitch chips, eight
// single-port ConnectX-7 VPI at up to 400 Gb/s InfiniBand / Ethernet.
ClusterSpec h100_node() {
  DeviceSpec d = gpu("h100", 3350 * kGiga, 80 * kGiB);
  d.gemm = {0.75, 192};  // ~700-750 of 989 bf16 TFLOPS on large GEMMs
  d.attention_efficiency = 0.35;
  return node(std::move(d), nvlink("NVLink 4 / NVSwitch", 450 * kGiga),
              nic("NDR InfiniBand 400 Gb/s (ConnectX-7)", 400),
              "DGX H100: 8 x H100 SXM5 80GB on NVSwitch, 8 x 400 Gb/s ConnectX-7 "
              "(H100 datasheet, DGX BasePOD reference architecture)");
}

// NVIDIA H200 SXM 141GB, DGX H200 node.
// H200 datasheet (https://www.nvidia.com/en-us/data-center/h200/, SXM column): the H100's
// arithmetic (core/device_peak.cpp); 141GB HBM3e at 4.8 TB/s; NVLink 900 GB/s. Node: as DGX
// H100 (same reference architecture page: 1,128 GB of GPU memory, eight 400 Gb/s ConnectX-7).
ClusterSpec h200_node() {
  DeviceSpec d = gpu("h200", 4800 * kGiga, 141 * kGiB);
  d.gemm = {0.75, 192};
  d.attention_efficiency = 0.35;
  return node(std::move(d), nvlink("NVLink 4 / NVSwitch", 450 * kGiga),
              nic("NDR InfiniBand 400 Gb/s (ConnectX-7)", 400),
              "DGX H200: 8 x H200 SXM 141GB on NVSwitch, 8 x 400 Gb/s ConnectX-7 "
              "(H200 datasheet, DGX BasePOD reference architecture)");
}

// NVIDIA B200 (HGX / DGX B200 node, 1,000 W parts; arithmetic from HGX B200's figures:
// core/device_peak.cpp). DGX B200 (https://www.nvidia.com/en-us/data-center/
// dgx-b200/): 1,440 GB HBM3e with 64 TB/s in all (180 GB and 8 TB/s per GPU), 14.4 TB/s of
// NVLink in all (1.8 TB/s per GPU, 900 GB/s each way). DGX B200 user guide
// (https://docs.nvidia.com/dgx/dgxb200-user-guide/introduction-to-dgxb200.html): 8 x
// single-port ConnectX-7, InfiniBand up to 400 Gb/s each.
ClusterSpec b200_node() {
  DeviceSpec d = gpu("b200", 8000 * kGiga, 180 * kGiB);
  d.gemm = {0.75, 256};  // an estimate: no measurement of our own yet
  d.attention_efficiency = 0.3;
  return node(std::move(d), nvlink("NVLink 5 / NVSwitch", 900 * kGiga),
              nic("NDR InfiniBand 400 Gb/s (ConnectX-7)", 400),
              "DGX B200: 8 x B200 180GB on NVSwitch, 8 x 400 Gb/s ConnectX-7 "
              "(HGX B200 and DGX B200 specifications, DGX B200 user guide)");
}

struct Kind {
  std::string_view name;
  ClusterSpec (*make)();
};
constexpr Kind kKinds[] = {
    {"a100", a100_node}, {"h100", h100_node}, {"h200", h200_node}, {"b200", b200_node}};

// The positive integer `s` spells, or -1.
int parse_count(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return -1;
  return v;
}

}  // namespace

ClusterSpec builtin_node(std::string_view kind) {
  for (const Kind& k : kKinds) {
    if (k.name == kind) return k.make();
  }
  fail("plan: unknown device kind '{}': expected one of a100, h100, h200, b200", kind);
}

std::string cluster_name_help() {
  return "a100xN, h100xN, h200xN, b200xN (N GPUs: 1 to 8 on one node, or a multiple of 8), "
         "local, localxN (N ranks on this machine's CPU)";
}

ClusterSpec local_cluster(const DeviceSpec& device, int ranks) {
  TS_CHECK(ranks >= 1, "plan: local cluster needs at least one rank, got {}", ranks);
  ClusterSpec c;
  c.device = device;
  // MFU against this CPU's ISA x clock peak with the threads a rank runs, not against the
  // measured rates the kernels are timed by.
  c.device.datasheet = cpu::gemm_datasheet_peak(omp_get_max_threads());
  c.gpus_per_node = ranks;
  c.nodes = 1;
  c.intra = local_link();
  c.inter = c.intra;
  c.source = "this machine's CPU, calibrated (plan/calibrate.h): " + device.name;
  c.name = ranks == 1 ? "local" : "localx" + std::to_string(ranks);
  c.host = true;
  c.collectives_overlap_compute = has_spare_core(ranks, omp_get_max_threads());
  const int threads = omp_get_max_threads(), cores = usable_cores();
  if (ranks * threads > cores)
    c.timing_caveat = fmt::format(
        "{} rank{} x {} thread{} on {} core{}: oversubscribed, so the ranks time-share the cores "
        "and every collective waits for ranks the OS has switched out, which this plan does not "
        "price; expect a longer step (1.2-1.8x the predicted one in docs/PLAN.md)",
        ranks, ranks == 1 ? "" : "s", threads, threads == 1 ? "" : "s", cores,
        cores == 1 ? "" : "s");
  return c;
}

ClusterSpec parse_cluster(std::string_view name) {
  auto bad = [&]() -> ClusterSpec {
    fail("plan: unknown cluster '{}': expected {}", name, cluster_name_help());
  };
  size_t x = name.rfind('x');
  std::string_view kind = x == std::string_view::npos ? name : name.substr(0, x);
  int count = 1;
  if (x != std::string_view::npos) {
    count = parse_count(name.substr(x + 1));
    if (count < 1) return bad();
  }
  if (kind == "local") return local_cluster(local_device(count), count);
  if (x == std::string_view::npos) return bad();
  for (const Kind& k : kKinds) {
    if (k.name != kind) continue;
    ClusterSpec c = k.make();
    if (count <= c.gpus_per_node) {
      c.gpus_per_node = count;
      c.nodes = 1;
    } else {
      TS_CHECK(count % c.gpus_per_node == 0,
               "plan: cluster '{}': {} GPUs do not fill whole {}-GPU nodes (use a multiple of {})",
               name, count, c.gpus_per_node, c.gpus_per_node);
      c.nodes = count / c.gpus_per_node;
    }
    c.name = std::string(name);
    return c;
  }
  return bad();
}

}  // namespace tessera::plan
