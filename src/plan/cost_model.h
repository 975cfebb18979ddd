// The time of one kernel and of one collective on a cluster (cluster.h), from what the meta
// device records (core/meta_device.h). Pure arithmetic; docs/PLAN.md writes the formulas out.
//
// Kernels: a roofline with a floor,
//   t = max(flops / (peak(class, dtype) * efficiency), bytes / (bandwidth * bandwidth_fraction),
//           min_kernel_seconds)
// where gemm kernels use the dtype's matmul peak times the GEMM curve at (m, n, k), attention
// the matmul peak (f32's when the device computes attention in f32) times attention_efficiency,
// and other kernels peak_f32 times vector_fraction.
//
// Collectives: alpha-beta models of NCCL's algorithms over the group's members (first +
// i * stride), placed on nodes of gpus_per_node consecutive ranks. With n members on N nodes,
// L = the most members on one node, B the whole buffer's bytes, f = 2 for all-reduce and 1 for
// reduce-scatter and all-gather, b and a the effective bandwidth and per-step latency of a link:
//   - one node (N = 1), ring over NVSwitch:
//       t = f (n - 1) a_intra + f (n - 1) / n * B / b_intra
//   - across nodes, the cheapest of
//       ring: every GPU's ring traffic crosses the node through the group's L NICs, so the
//             ring runs at the slower of NVLink and the node's share of NICs:
//             t = f (n - 1) a_inter + f (n - 1) / n * B / min(b_intra, L b_nic)
//       hierarchical (L > 1): reduce-scatter in the node, the collective across nodes on each
//             GPU's own NIC (L in parallel, B / L each), all-gather in the node:
//             t = f [(L - 1) a_intra + (L - 1) / L * B / b_intra]
//               + f [(N - 1) a_inter + (N - 1) / N * B / (L b_nic)]
//       tree (all-reduce only, NCCL's double binary tree, chosen for small buffers): a chain in
//             the node and a tree of depth log2 N across, up to reduce and down to broadcast:
//             t = 2 [(L - 1) a_intra + ceil(log2 N) a_inter] + 2 B / min(b_intra, L b_nic)
//   - broadcast: a pipelined ring, t = (n - 1) a + B / b (b, a as for the ring above);
//   - send / recv: t = a + B / b over NVSwitch when both ranks share a node, else the NIC;
//   - barrier: 2 ceil(log2 n) steps of the slowest link's latency.
#pragma once
#include "core/meta_device.h"
#include "plan/cluster.h"

namespace tessera::plan {

// Seconds of one kernel on device d: its fit of measured times (kernel_fit.h) applied to its
// roofline where d has one (local), else the roofline with its floor.
double kernel_seconds(const DeviceSpec& d, const meta::KernelCost& k);
// The roofline alone, without the floor: max(compute, memory) above.
double roofline_seconds(const DeviceSpec& d, const meta::KernelCost& k);

// Seconds of one collective or point-to-point transfer on cluster c, from its start (all
// members ready) to its end. Group of one: 0. `rank`: the rank that issued it, which with the
// peer places a send / recv in one node or across two; -1: the group's first member other
// than the peer. Throws an Error naming an unknown op.
double collective_seconds(const ClusterSpec& c, const meta::CollectiveEvent& e, int rank = -1);

// Where a group's members sit: how many nodes they span and the most on any one node.
struct GroupPlacement {
  int nodes = 1;
  int per_node = 1;  // L
};
GroupPlacement placement(const ClusterSpec& c, const meta::RankGroup& g);

// Whether an op is a point-to-point transfer ("send" / "recv").
bool is_point_to_point(const char* op);

}  // namespace tessera::plan
