// What the planner predicts for: a device (peak arithmetic per dtype, memory bandwidth and
// capacity, and how much of each real kernels reach), the links between devices, and a cluster
// of nodes built from them. Built-in descriptions of NVIDIA HGX / DGX nodes (8 GPUs on
// NVSwitch, one NIC per GPU) carry the vendors' datasheet figures, each with its source here
// (arithmetic: core/device_peak.cpp) and in docs/PLAN.md; `local` is this machine's CPU,
// measured by calibrate.h.
//
// Units: FLOP/s, bytes/s, bytes and seconds throughout. Peaks are dense (no 2:4 sparsity).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/device_peak.h"
#include "core/dtype.h"
#include "plan/kernel_fit.h"

namespace tessera::plan {

// A GEMM's achieved share of its dtype's peak as a function of its shape:
//   efficiency(m, n, k) = peak_fraction * s(m) * s(n) * s(k),  s(d) = d / (d + half_dim).
// Large GEMMs approach peak_fraction; a dimension of half_dim halves it (tile quantisation,
// too few tiles to fill the machine, and the prologue / epilogue of a short k loop).
struct GemmEfficiency {
  double peak_fraction = 0.8;
  double half_dim = 64;
  double at(int64_t m, int64_t n, int64_t k) const;
};

struct DeviceSpec {
  std::string name;
  // Dense peak arithmetic, FLOP/s, that kernels are timed by: f32 on the vector units
  // (non-tensor), and tensor-core math in tf32, bf16 and f16 (with f32 accumulation). The
  // datasheet's for the GPUs; calibrate.h's measured rates for the local CPU.
  double peak_f32 = 0;
  double peak_tf32 = 0;
  double peak_bf16 = 0;
  double peak_f16 = 0;
  double memory_bandwidth = 0;  // bytes/s, the device memory's peak
  double memory_bytes = 0;      // capacity
  // Achievable shares: of memory bandwidth by streaming kernels, of peak_f32 by the vector
  // arithmetic of element-wise kernels, of the tensor peak by fused attention.
  double bandwidth_fraction = 0.8;
  double vector_fraction = 0.7;
  double attention_efficiency = 0.5;
  GemmEfficiency gemm;
  // Launch overhead and tail: no kernel takes less.
  double min_kernel_seconds = 4e-6;
  // f32 GEMMs run on tensor cores in tf32 (a library's FAST_TF32 mode); false: at peak_f32.
  // Tessera's cuBLASLt GEMMs never request TF32, so every built-in node and `local` set false.
  bool f32_gemm_tf32 = true;
  // Fused attention computes in f32 whatever its operands' dtype (the CPU kernel).
  bool attention_in_f32 = false;
  // What kernels took on this device, fitted against the roofline above (local only: the
  // calibration runs small training steps here, calibrate.h); null: the roofline alone.
  std::shared_ptr<const KernelTimes> measured_kernels;

  // What MFU divides by: the datasheet peaks (core/device_peak.h), the vendor's for the GPUs,
  // the ISA x clock formula for the local CPU (core/cpu_peak.h), not its measured rates.
  DevicePeak datasheet;

  // The peak a GEMM (or fused attention) with operands of type t runs against.
  double matmul_peak(DType t) const;
};

// One direction of a GPU's link: bandwidth per GPU and per direction, and the latency of one
// message (one step of a ring).
struct LinkSpec {
  std::string name;
  double bandwidth = 0;   // bytes/s per GPU, unidirectional
  double latency = 0;     // seconds per message / ring step
  double efficiency = 1;  // achievable share of `bandwidth` by the collective library
  double effective_bandwidth() const { return bandwidth * efficiency; }
};

struct ClusterSpec {
  DeviceSpec device;
  int gpus_per_node = 1;
  int nodes = 1;
  LinkSpec intra;      // between GPUs of one node (NVLink through NVSwitch; shared memory locally)
  LinkSpec inter;      // each GPU's own NIC to the other nodes (InfiniBand / RoCE)
  std::string source;  // what this description is and where its figures come from
  std::string name;    // as parsed: "h100x64", "local"
  bool host = false;   // this machine's CPU (local): plans follow the host allocator
  // Whether collectives progress while the ranks compute. GPUs: always (NCCL's kernels run on
  // the device). Local ranks over MPI: when each has a core to spare (dist::MpiOptions::overlap,
  // parallel.overlap); otherwise a collective moves only while its rank waits on some work.
  bool collectives_overlap_compute = true;
  // Why the predicted step time may not hold, or empty: local ranks whose threads outnumber
  // the cores time-share them, and each collective then waits for ranks the OS has switched
  // out, which the cost model does not price.
  std::string timing_caveat;

  int gpus() const { return gpus_per_node * nodes; }
  int node_of(int rank) const { return rank / gpus_per_node; }
};

// The built-in node kinds ("a100", "h100", "h200", "b200"): one 8-GPU node of each.
ClusterSpec builtin_node(std::string_view kind);

// A cluster by name: "<kind>x<gpus>" for a built-in kind (h100x64: 64 H100s, 8 nodes of 8;
// fewer than 8 GPUs: that many on one node; more: a multiple of 8), "local" (this machine's
// CPU, one rank) or "localx<N>" (N ranks on this machine), calibrated by calibrate.h once per
// process. Throws an Error naming the accepted names for anything else.
ClusterSpec parse_cluster(std::string_view name);

// The accepted forms, for messages and --help: "a100xN, h100xN, h200xN, b200xN, local, localxN".
std::string cluster_name_help();

// A cluster of `ranks` processes on this machine with the given (calibrated) device.
ClusterSpec local_cluster(const DeviceSpec& device, int ranks);

}  // namespace tessera::plan
