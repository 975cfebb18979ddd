#include "plan/cost_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace tessera::plan {

double roofline_seconds(const DeviceSpec& d, const meta::KernelCost& k) {
  double rate = 0;
  switch (k.cls) {
    case meta::KernelClass::gemm: {
      // A GEMM without its shape (m, n, k unset) is taken as large.
      const bool shaped = k.m > 0 && k.n > 0 && k.k > 0;
      rate = d.matmul_peak(k.dtype) * (shaped ? d.gemm.at(k.m, k.n, k.k) : d.gemm.peak_fraction);
      break;
    }
    case meta::KernelClass::attention:
      rate = d.matmul_peak(d.attention_in_f32 ? DType::f32 : k.dtype) * d.attention_efficiency;
      break;
    case meta::KernelClass::other:
      rate = d.peak_f32 * d.vector_fraction;
      break;
  }
  const double bandwidth = d.memory_bandwidth * d.bandwidth_fraction;
  const double compute = k.flops > 0 && rate > 0 ? k.flops / rate : 0.0;
  const double memory = k.bytes > 0 && bandwidth > 0 ? k.bytes / bandwidth : 0.0;
  return std::max(compute, memory);
}

double kernel_seconds(const DeviceSpec& d, const meta::KernelCost& k) {
  const double roofline = roofline_seconds(d, k);
  if (d.measured_kernels)
    if (const KernelFit* fit = d.measured_kernels->find(k)) return fit->seconds(roofline);
  return std::max(roofline, d.min_kernel_seconds);
}

bool is_point_to_point(const char* op) {
  return std::strcmp(op, "send") == 0 || std::strcmp(op, "recv") == 0;
}

GroupPlacement placement(const ClusterSpec& c, const meta::RankGroup& g) {
  // Members ascend (stride > 0), so each node's members are consecutive: count runs.
  GroupPlacement p{0, 0};
  int run = 0, last_node = -1;
  for (int i = 0; i < g.size; ++i) {
    const int node = c.node_of(g.first + i * g.stride);
    if (node != last_node) {
      ++p.nodes;
      run = 0;
      last_node = node;
    }
    p.per_node = std::max(p.per_node, ++run);
  }
  if (p.nodes == 0) p = {1, 1};
  return p;
}

namespace {

int ceil_log2(int n) {
  int steps = 0;
  while ((1 << steps) < n) ++steps;
  return steps;
}

// Reduce-scatter (f = 1), all-gather (f = 1) or all-reduce (f = 2) of B bytes: see the header.
double ring_family(const ClusterSpec& c, const GroupPlacement& p, int n, double B, double f,
                   bool allow_tree) {
  const double b_intra = c.intra.effective_bandwidth();
  const double a_intra = c.intra.latency;
  if (p.nodes == 1) return f * (n - 1) * a_intra + f * (n - 1) / n * B / b_intra;

  const double L = p.per_node, N = p.nodes;
  const double b_nic = c.inter.effective_bandwidth();
  const double a_inter = c.inter.latency;
  const double b_ring = std::min(b_intra, L * b_nic);
  double best = f * (n - 1) * a_inter + f * (n - 1) / n * B / b_ring;
  if (p.per_node > 1) {
    const double hier = f * ((L - 1) * a_intra + (L - 1) / L * B / b_intra) +
                        f * ((N - 1) * a_inter + (N - 1) / N * B / (L * b_nic));
    best = std::min(best, hier);
  }
  if (allow_tree) {
    const double tree = 2 * ((L - 1) * a_intra + ceil_log2(p.nodes) * a_inter) + 2 * B / b_ring;
    best = std::min(best, tree);
  }
  return best;
}

}  // namespace

double collective_seconds(const ClusterSpec& c, const meta::CollectiveEvent& e, int rank) {
  const std::string_view op = e.op;
  const double B = e.bytes;
  if (is_point_to_point(e.op)) {
    int self = rank;
    if (self < 0) self = e.group.first == e.peer ? e.group.first + e.group.stride : e.group.first;
    const bool same_node = e.peer >= 0 && c.node_of(self) == c.node_of(e.peer);
    const LinkSpec& link = same_node ? c.intra : c.inter;
    return link.latency + B / link.effective_bandwidth();
  }
  const int n = e.group.size;
  if (n <= 1) return 0.0;
  const GroupPlacement p = placement(c, e.group);
  if (op == "all_reduce") return ring_family(c, p, n, B, 2, true);
  if (op == "reduce_scatter" || op == "all_gather") return ring_family(c, p, n, B, 1, false);
  if (op == "broadcast") {
    if (p.nodes == 1) return (n - 1) * c.intra.latency + B / c.intra.effective_bandwidth();
    const double b =
        std::min(c.intra.effective_bandwidth(), p.per_node * c.inter.effective_bandwidth());
    return (n - 1) * c.inter.latency + B / b;
  }
  if (op == "barrier") {
    const double a = p.nodes == 1 ? c.intra.latency : c.inter.latency;
    return 2 * ceil_log2(n) * a;
  }
  fail(
      "plan: unknown collective '{}' (expected all_reduce, reduce_scatter, all_gather, "
      "broadcast, send, recv or barrier)",
      op);
}

}  // namespace tessera::plan
