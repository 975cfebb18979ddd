// The planner's cost model (src/plan/): kernel rooflines, collective alpha-beta models, the
// step timeline over rank traces, cluster names and the local calibration. The suite is
// "plan", lower case, so that `ctest -R plan` selects these tests.
#include <gtest/gtest.h>
#include <omp.h>

#include <fmt/format.h>

#include <cmath>

#include "core/host_cores.h"
#include "gradcheck.h"
#include "plan/calibrate.h"
#include "plan/cluster.h"
#include "plan/cost_model.h"
#include "plan/timeline.h"

using namespace tessera;
using namespace tessera::plan;
using tessera::testing::expect_error;

namespace {

// A device with round numbers: 100 TFLOP/s bf16 at 50% efficiency for large GEMMs, 1 TB/s.
DeviceSpec round_device() {
  DeviceSpec d;
  d.name = "round";
  d.peak_f32 = 10e12;
  d.peak_tf32 = 50e12;
  d.peak_bf16 = 100e12;
  d.peak_f16 = 100e12;
  d.memory_bandwidth = 1e12;
  d.bandwidth_fraction = 0.5;
  d.vector_fraction = 1.0;
  d.gemm = {0.5, 64};
  d.attention_efficiency = 0.25;
  d.min_kernel_seconds = 1e-6;
  return d;
}

// 8 GPUs per node; 100 GB/s NVLink, 10 GB/s NIC, full efficiency.
ClusterSpec round_cluster(int nodes) {
  ClusterSpec c;
  c.device = round_device();
  c.gpus_per_node = 8;
  c.nodes = nodes;
  c.intra = {"nvlink", 100e9, 2e-6, 1.0};
  c.inter = {"nic", 10e9, 5e-6, 1.0};
  return c;
}

meta::Event kernel(double seconds_at_f32_vector, const char* name = "k") {
  // An "other" kernel of pure arithmetic: seconds * peak_f32 FLOPs on round_device.
  meta::Event e;
  e.kind = meta::EventKind::kernel;
  e.kernel.name = name;
  e.kernel.flops = seconds_at_f32_vector * 10e12;
  return e;
}

meta::Event collective(const char* op, double bytes, meta::RankGroup g, int64_t work,
                       int peer = -1) {
  meta::Event e;
  e.kind = meta::EventKind::collective;
  e.collective.op = op;
  e.collective.bytes = bytes;
  e.collective.group = g;
  e.collective.peer = peer;
  e.collective.work = work;
  return e;
}

meta::Event wait(int64_t work) {
  meta::Event e;
  e.kind = meta::EventKind::wait;
  e.work = work;
  return e;
}

bool near_rel(double a, double b, double rel) {
  return std::abs(a - b) <= rel * std::abs(b);
}

// The time the cost model gives an all-reduce of `bytes` over `g`.
double all_reduce_seconds(const ClusterSpec& c, double bytes, const meta::RankGroup& g) {
  meta::CollectiveEvent probe;
  probe.op = "all_reduce";
  probe.bytes = bytes;
  probe.group = g;
  return collective_seconds(c, probe);
}

// A kernel of kt seconds, an all-reduce (work 7), K more kernels, the wait on it, a last kernel.
RankTrace all_reduce_between_kernels(double bytes, const meta::RankGroup& g, int K, double kt) {
  RankTrace r{0, {}};
  r.events.push_back(kernel(kt));
  r.events.push_back(collective("all_reduce", bytes, g, 7));
  for (int i = 0; i < K; ++i) r.events.push_back(kernel(kt));
  r.events.push_back(wait(7));
  r.events.push_back(kernel(kt));
  return r;
}

}  // namespace

TEST(plan, GemmComputeBoundIsFlopsOverPeakTimesEfficiency) {
  DeviceSpec d = round_device();
  meta::KernelCost k = meta::gemm_cost("gemm", 1, 4096, 4096, 4096, DType::bf16);
  const double eff = 0.5 * std::pow(4096.0 / (4096.0 + 64.0), 3);
  EXPECT_DOUBLE_EQ(d.gemm.at(4096, 4096, 4096), eff);
  const double expected = k.flops / (100e12 * eff);
  EXPECT_TRUE(near_rel(kernel_seconds(d, k), expected, 1e-12)) << kernel_seconds(d, k);
  // f32 GEMMs run at the tf32 peak when the device says so, at peak_f32 otherwise.
  meta::KernelCost f = meta::gemm_cost("gemm", 1, 4096, 4096, 4096, DType::f32);
  EXPECT_TRUE(near_rel(kernel_seconds(d, f), f.flops / (50e12 * eff), 1e-12));
  d.f32_gemm_tf32 = false;
  EXPECT_TRUE(near_rel(kernel_seconds(d, f), f.flops / (10e12 * eff), 1e-12));
}

TEST(plan, GemmMemoryBoundIsBytesOverAchievableBandwidth) {
  DeviceSpec d = round_device();
  // A matrix-vector product: 2 m k FLOPs over about 2 m k bytes.
  meta::KernelCost k = meta::gemm_cost("gemv", 1, 8192, 1, 8192, DType::bf16);
  ASSERT_GT(k.bytes, 0);
  const double memory = k.bytes / (1e12 * 0.5);
  EXPECT_GT(memory, k.flops / (100e12 * d.gemm.at(8192, 1, 8192)));
  EXPECT_DOUBLE_EQ(kernel_seconds(d, k), memory);
  // Tiny kernels take the floor.
  meta::KernelCost tiny = meta::memory_bound_cost("add", 4, 48);
  EXPECT_DOUBLE_EQ(kernel_seconds(d, tiny), 1e-6);
  // Attention: the dtype's peak times attention's efficiency, or f32's on an f32-only device.
  meta::KernelCost att;
  att.cls = meta::KernelClass::attention;
  att.flops = 1e12;
  att.dtype = DType::bf16;
  EXPECT_DOUBLE_EQ(kernel_seconds(d, att), 1e12 / (100e12 * 0.25));
  d.attention_in_f32 = true;
  d.f32_gemm_tf32 = false;
  EXPECT_DOUBLE_EQ(kernel_seconds(d, att), 1e12 / (10e12 * 0.25));
}

TEST(plan, RingAllReduceInOneNode) {
  ClusterSpec c = round_cluster(2);
  const double B = 1e9;
  for (int n : {2, 4, 8}) {
    meta::CollectiveEvent e;
    e.op = "all_reduce";
    e.bytes = B;
    e.group = {n, 8, 1, 16};  // ranks 8..8+n-1: all on node 1
    const double expected = 2.0 * (n - 1) / n * B / 100e9 + 2.0 * (n - 1) * 2e-6;
    EXPECT_TRUE(near_rel(collective_seconds(c, e), expected, 1e-12)) << n;
    e.op = "reduce_scatter";
    EXPECT_TRUE(near_rel(collective_seconds(c, e), expected / 2, 1e-12)) << n;
    e.op = "all_gather";
    EXPECT_TRUE(near_rel(collective_seconds(c, e), expected / 2, 1e-12)) << n;
  }
  meta::CollectiveEvent one;
  one.op = "all_reduce";
  one.bytes = B;
  one.group = {1, 3, 1, 16};
  EXPECT_EQ(collective_seconds(c, one), 0.0);
  one.op = "gather";
  one.group = {2, 0, 1, 16};
  expect_error([&] { collective_seconds(c, one); }, {"gather", "all_reduce"});
}

TEST(plan, CrossingNodesUsesTheNics) {
  ClusterSpec c = round_cluster(4);
  const double B = 1e9;
  meta::CollectiveEvent e;
  e.op = "all_reduce";
  e.bytes = B;
  // Data parallelism across nodes with tp = 8 inside: one member per node, ring over NICs.
  e.group = {4, 3, 8, 32};
  GroupPlacement p = placement(c, e.group);
  EXPECT_EQ(p.nodes, 4);
  EXPECT_EQ(p.per_node, 1);
  EXPECT_TRUE(near_rel(collective_seconds(c, e), 2.0 * 3 / 4 * B / 10e9 + 2.0 * 3 * 5e-6, 1e-12));
  // 16 consecutive ranks on two nodes: hierarchical (the NICs of 8 GPUs, NVLink inside).
  e.group = {16, 0, 1, 32};
  p = placement(c, e.group);
  EXPECT_EQ(p.nodes, 2);
  EXPECT_EQ(p.per_node, 8);
  const double ring = 2.0 * 15 / 16 * B / std::min(100e9, 8 * 10e9) + 2.0 * 15 * 5e-6;
  const double hier = 2.0 * (7 * 2e-6 + 7.0 / 8 * B / 100e9) + 2.0 * (5e-6 + 0.5 * B / 80e9);
  EXPECT_TRUE(near_rel(collective_seconds(c, e), std::min(ring, hier), 1e-12));
  // Slower than the same all-reduce inside a node.
  meta::CollectiveEvent in_node = e;
  in_node.group = {8, 0, 1, 32};
  EXPECT_GT(collective_seconds(c, e), collective_seconds(c, in_node));
  // Small all-reduces across nodes take the tree: latency grows with log2(nodes), not nodes.
  meta::CollectiveEvent small = e;
  small.bytes = 8;
  small.group = {4, 0, 8, 32};
  const double tree = 2 * (2 * 5e-6) + 2 * 8 / 10e9;
  EXPECT_TRUE(near_rel(collective_seconds(c, small), tree, 1e-12));
  // Point to point: NVLink inside a node, the NIC across.
  meta::CollectiveEvent p2p;
  p2p.op = "send";
  p2p.bytes = B;
  p2p.group = {2, 0, 8, 32};
  p2p.peer = 8;
  EXPECT_TRUE(near_rel(collective_seconds(c, p2p, 0), 5e-6 + B / 10e9, 1e-12));
  p2p.peer = 1;
  p2p.group = {2, 0, 1, 32};
  EXPECT_TRUE(near_rel(collective_seconds(c, p2p, 0), 2e-6 + B / 100e9, 1e-12));
}

TEST(plan, AllReduceOverlapsTheKernelsBeforeItsWait) {
  ClusterSpec c = round_cluster(1);
  meta::RankGroup g{8, 0, 1, 8};
  const double B = 1e9;
  const double comm = all_reduce_seconds(c, B, g);
  for (int K : {2, 10, 40}) {
    const double kt = 1e-3;
    Timeline t = simulate(c, {all_reduce_between_kernels(B, g, K, kt)});
    const double exposed = std::max(0.0, comm - K * kt);
    EXPECT_NEAR(t.ranks[0].exposed_comm_seconds, exposed, 1e-12) << K;
    EXPECT_NEAR(t.ranks[0].compute_seconds, (K + 2) * kt, 1e-12);
    EXPECT_NEAR(t.ranks[0].step_seconds, (K + 2) * kt + exposed, 1e-12);
    EXPECT_NEAR(t.ranks[0].comm_seconds, comm, 1e-15);
    EXPECT_EQ(t.ranks[0].bubble_seconds, 0.0);
    EXPECT_EQ(t.collectives.at("all_reduce").count, 1);
    EXPECT_EQ(t.kernels.at("k").count, K + 2);
  }
}

// Local ranks with no core to spare: the all-reduce moves only once the compute stream waits,
// so none of it hides behind the kernels between, and a collective the step never waits on
// still ends the step.
TEST(plan, WithoutOverlapACollectiveStartsAtTheFirstWait) {
  ClusterSpec c = round_cluster(1);
  c.collectives_overlap_compute = false;
  meta::RankGroup g{8, 0, 1, 8};
  const double B = 1e9, kt = 1e-3;
  const double comm = all_reduce_seconds(c, B, g);
  for (int K : {2, 10, 40}) {
    Timeline t = simulate(c, {all_reduce_between_kernels(B, g, K, kt)});
    EXPECT_NEAR(t.ranks[0].exposed_comm_seconds, comm, 1e-12) << K;
    EXPECT_NEAR(t.ranks[0].step_seconds, (K + 2) * kt + comm, 1e-12) << K;
  }
  // Never waited on: it moves once the rank's events are done.
  RankTrace r{0, {}};
  r.events.push_back(collective("all_reduce", B, g, 9));
  r.events.push_back(kernel(kt));
  Timeline t = simulate(c, {r});
  EXPECT_NEAR(t.ranks[0].step_seconds, kt + comm, 1e-12);
  EXPECT_EQ(t.ranks[0].exposed_comm_seconds, 0.0);
}

TEST(plan, CollectivesQueueOnOneStreamAndMeetAcrossSimulatedMembers) {
  ClusterSpec c = round_cluster(1);
  meta::RankGroup g{2, 0, 1, 2};
  meta::CollectiveEvent probe;
  probe.op = "all_reduce";
  probe.bytes = 1e8;
  probe.group = g;
  const double comm = collective_seconds(c, probe);
  // Rank 0 issues at once; rank 1 after 5 ms of kernels: the all-reduce starts then. Rank 0's
  // 5 ms waiting for rank 1 is bubble (load imbalance), not communication.
  RankTrace r0{0, {collective("all_reduce", 1e8, g, 1), wait(1)}};
  RankTrace r1{1, {kernel(5e-3), collective("all_reduce", 1e8, g, 1), wait(1)}};
  Timeline t = simulate(c, {r0, r1});
  EXPECT_NEAR(t.ranks[0].exposed_comm_seconds, comm, 1e-12);
  EXPECT_NEAR(t.ranks[0].bubble_seconds, 5e-3, 1e-12);
  EXPECT_EQ(t.ranks[1].bubble_seconds, 0.0);
  EXPECT_NEAR(t.ranks[1].exposed_comm_seconds, comm, 1e-12);
  EXPECT_NEAR(t.step_seconds, 5e-3 + comm, 1e-12);
  // Two collectives back to back on one rank run one after the other.
  RankTrace two{
      0, {collective("all_reduce", 1e8, g, 1), collective("all_reduce", 1e8, g, 2), wait(2)}};
  Timeline t2 = simulate(c, {two});
  EXPECT_NEAR(t2.step_seconds, 2 * comm, 1e-12);
  EXPECT_NEAR(t2.ranks[0].exposed_comm_seconds, 2 * comm, 1e-12);
}

// GPipe on two stages: every forward takes f and every backward b; transfers are instant. The
// idle share of rank time is the analytic bubble (p - 1) / (m + p - 1).
TEST(plan, GpipeBubbleMatchesTheAnalyticFraction) {
  ClusterSpec c = round_cluster(1);
  c.intra = {"instant", 1e30, 0, 1};
  const int p = 2;
  const double f = 1e-3, b = 2e-3;
  meta::RankGroup pp{2, 0, 1, 2};
  for (int m : {1, 4, 8, 32}) {
    RankTrace s0{0, {}}, s1{1, {}};
    int64_t w0 = 0, w1 = 0;
    for (int i = 0; i < m; ++i) {
      s0.events.push_back(kernel(f, "forward"));
      s0.events.push_back(collective("send", 1024, pp, ++w0, 1));
      s1.events.push_back(collective("recv", 1024, pp, ++w1, 0));
      s1.events.push_back(wait(w1));
      s1.events.push_back(kernel(f, "forward"));
    }
    for (int i = m - 1; i >= 0; --i) {
      s1.events.push_back(kernel(b, "backward"));
      s1.events.push_back(collective("send", 1024, pp, ++w1, 0));
      s0.events.push_back(collective("recv", 1024, pp, ++w0, 1));
      s0.events.push_back(wait(w0));
      s0.events.push_back(kernel(b, "backward"));
    }
    Timeline t = simulate(c, {s0, s1});
    const double busy = t.ranks[0].compute_seconds + t.ranks[1].compute_seconds;
    const double idle = 1 - busy / (p * t.step_seconds);
    const double analytic = double(p - 1) / (m + p - 1);
    EXPECT_NEAR(idle, analytic, 0.01 * analytic) << m;
    EXPECT_NEAR(t.step_seconds, (m + p - 1) * (f + b), 1e-9) << m;
    // Stage 0 idles only in its wait for the first gradient: all of it is bubble.
    EXPECT_NEAR(t.ranks[0].bubble_seconds, f + b, 1e-9);
    // Stage 1 waits f for its first input (its tail, b, is after its last work).
    EXPECT_NEAR(t.ranks[1].bubble_seconds, f, 1e-9);
    EXPECT_EQ(t.ranks[0].exposed_comm_seconds, 0.0);
    EXPECT_EQ(t.collectives.at("send").count, 2 * m);
  }
}

TEST(plan, UnmatchedTransferIsReported) {
  ClusterSpec c = round_cluster(1);
  meta::RankGroup pp{2, 0, 1, 2};
  RankTrace s0{0, {collective("recv", 64, pp, 1, 1), wait(1)}};
  RankTrace s1{1, {kernel(1e-3)}};
  expect_error([&] { simulate(c, {s0, s1}); }, {"rank 0", "recv", "never matched"});
  // The same recv from a rank not simulated starts when issued.
  Timeline t = simulate(c, {s0});
  EXPECT_GT(t.ranks[0].bubble_seconds, 0.0);
  expect_error([&] { simulate(c, {s1, s1}); }, {"rank 1", "twice"});
}

TEST(plan, ClusterNamesParse) {
  ClusterSpec h = parse_cluster("h100x64");
  EXPECT_EQ(h.gpus(), 64);
  EXPECT_EQ(h.nodes, 8);
  EXPECT_EQ(h.gpus_per_node, 8);
  EXPECT_DOUBLE_EQ(h.device.peak_bf16, 989.5e12);
  EXPECT_DOUBLE_EQ(h.inter.bandwidth, 50e9);  // 400 Gb/s per GPU
  EXPECT_DOUBLE_EQ(h.intra.bandwidth, 450e9);
  ClusterSpec a = parse_cluster("a100x8");
  EXPECT_EQ(a.nodes, 1);
  EXPECT_DOUBLE_EQ(a.inter.bandwidth, 25e9);  // 200 Gb/s HDR
  EXPECT_DOUBLE_EQ(a.device.memory_bandwidth, 2039e9);
  ClusterSpec h2 = parse_cluster("h200x16");
  EXPECT_EQ(h2.nodes, 2);
  EXPECT_DOUBLE_EQ(h2.device.memory_bandwidth, 4.8e12);
  ClusterSpec bb = parse_cluster("b200x4096");
  EXPECT_EQ(bb.nodes, 512);
  EXPECT_DOUBLE_EQ(bb.device.peak_bf16, 2.25e15);
  ClusterSpec small = parse_cluster("b200x4");
  EXPECT_EQ(small.nodes, 1);
  EXPECT_EQ(small.gpus_per_node, 4);
  for (const char* bad : {"h100", "v100x8", "h100x0", "h100x-8", "h100xabc", "", "x8"}) {
    expect_error([&] { parse_cluster(bad); }, {"h100xN", "a100xN", "b200xN", "localxN"});
  }
  expect_error([&] { parse_cluster("h100x12"); }, {"multiple of 8"});
  ClusterSpec l = local_cluster(round_device(), 4);
  EXPECT_EQ(l.gpus(), 4);
  EXPECT_EQ(l.nodes, 1);
  EXPECT_GT(l.intra.bandwidth, 0);
  EXPECT_GT(l.intra.latency, 1e-6);
}

// More local ranks' threads than cores: the plan says its step time does not price the
// time-sharing; with a core for each thread it says nothing.
TEST(plan, AnOversubscribedLocalClusterCarriesATimingCaveat) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const ClusterSpec over = local_cluster(round_device(), 2 * usable_cores());
  const ClusterSpec one = local_cluster(round_device(), 1);
  omp_set_num_threads(threads);
  EXPECT_NE(over.timing_caveat.find("oversubscribed"), std::string::npos) << over.timing_caveat;
  EXPECT_NE(over.timing_caveat.find(
                fmt::format("{} ranks x 1 thread on {} core", 2 * usable_cores(), usable_cores())),
            std::string::npos)
      << over.timing_caveat;
  EXPECT_EQ(one.timing_caveat, "");
}

TEST(plan, LocalCalibrationIsPlausible) {
  // One thread: CI hosts share their cores, and a parallel region there may wait
  // milliseconds for its second thread; the figures are checked for plausibility only.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  DeviceSpec d = calibrate_local({.seconds_per_measurement = 0.01, .time_training_steps = false});
  omp_set_num_threads(threads);
  EXPECT_EQ(d.measured_kernels, nullptr);
  EXPECT_NE(d.name.find("1 OpenMP thread"), std::string::npos) << d.name;
  EXPECT_GT(d.peak_f32, 1e9);
  EXPECT_LT(d.peak_f32, 1e14);
  EXPECT_GT(d.peak_bf16, 1e9);
  EXPECT_GT(d.memory_bandwidth, 1e9);
  EXPECT_LT(d.memory_bandwidth, 1e13);
  EXPECT_GT(d.memory_bytes, 1e9);
  EXPECT_GT(d.attention_efficiency, 0.0);
  EXPECT_GT(d.gemm.half_dim, 0.0);
  EXPECT_GT(d.min_kernel_seconds, 0.0);
  EXPECT_LT(d.min_kernel_seconds, 1e-2);
  // A large f32 GEMM on the calibrated device is predicted within reason of its own rate.
  meta::KernelCost k = meta::gemm_cost("gemm", 1, 1024, 1024, 1024, DType::f32);
  const double t = kernel_seconds(d, k);
  EXPECT_GT(t, k.flops / d.peak_f32 * 0.99);
}
