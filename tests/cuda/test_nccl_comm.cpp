// The NCCL communicator: collectives, point-to-point transfers, the watchdog. One binary, two
// ways to run it:
//   test_nccl_comm                  one process: the LocalCommunicator carries the unique id
//   mpirun -np N test_nccl_comm     N processes: the MPI communicator carries it
// (CTest registers both; scripts/gpu_check.sh runs one rank per GPU.)
//
// The unique-id exchange needs no GPU and always runs, on every rank. The collectives need one
// GPU per rank (NCCL refuses two ranks on one GPU): without a device, or with fewer GPUs than
// ranks, they are skipped, saying why. Every rank runs every test, and tests run all their
// collectives before they check anything (a rank that returned early would leave the others
// waiting).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/copy.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "dist/local_comm.h"
#include "dist/mpi_comm.h"
#include "dist/nccl_comm.h"
#include "dist/nccl_id.h"
#include "dist/world.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/elementwise.h"
#include "mpi/rank_output.h"

using namespace tessera;
using namespace tessera::dist;
using tessera::dist::NcclCommunicator;
using tessera::dist::NcclOptions;

namespace {

LaunchInfo g_launch;
std::shared_ptr<Communicator> g_world;  // the CPU communicator: Local or MPI

// The message of the Error f throws ("" when it does not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ---- Unique-id exchange (no GPU) ----

std::string pattern(char first) {
  std::string id(dist::kNcclUniqueIdBytes, '\0');
  for (size_t i = 0; i < id.size(); ++i) id[i] = char(first + int(i % 61));
  return id;
}

TEST(NcclId, LocalCommunicatorHandsBackTheRootsId) {
  LocalCommunicator local;
  int calls = 0;
  const std::string id = dist::exchange_unique_id(local, [&] {
    ++calls;
    return pattern('a');
  });
  EXPECT_EQ(id, pattern('a'));
  EXPECT_EQ(calls, 1);
}

TEST(NcclId, EveryRankGetsRankZerosNcclId) {
  int calls = 0;
  const std::string id = dist::exchange_unique_id(*g_world, [&] {
    ++calls;
    return dist::new_nccl_unique_id();
  });
  const std::vector<std::string> seen = g_world->all_gather_bytes(id);
  EXPECT_EQ(calls, g_world->rank() == 0 ? 1 : 0) << "only rank 0 creates the id";
  EXPECT_EQ(id.size(), dist::kNcclUniqueIdBytes);
  EXPECT_NE(id, std::string(dist::kNcclUniqueIdBytes, '\0'));
  for (size_t r = 0; r < seen.size(); ++r) EXPECT_EQ(seen[r], seen[0]) << "rank " << r;
}

TEST(NcclId, NewIdsDiffer) {
  // Each id carries a fresh random magic (and its own listening address).
  EXPECT_NE(dist::new_nccl_unique_id(), dist::new_nccl_unique_id());
}

TEST(NcclId, RootsFailureReachesEveryRankAsAnError) {
  const std::string err = error_of([] {
    dist::exchange_unique_id(*g_world, []() -> std::string {
      throw Error("no network interface for NCCL's bootstrap");
    });
  });
  EXPECT_NE(err.find("rank 0 could not create the NCCL unique id"), std::string::npos) << err;
  EXPECT_NE(err.find("no network interface for NCCL's bootstrap"), std::string::npos) << err;
}

TEST(NcclId, AnIdOfTheWrongSizeIsAnErrorOnEveryRank) {
  const std::string err =
      error_of([] { dist::exchange_unique_id(*g_world, [] { return std::string("short"); }); });
  EXPECT_NE(err.find("has 5 bytes, expected 128"), std::string::npos) << err;
}

TEST(NcclId, SplitGroupsExchangeTheirOwnIds) {
  const int color = g_world->rank() % 2;
  std::unique_ptr<Communicator> group = g_world->split(color, g_world->rank());
  const std::string id =
      dist::exchange_unique_id(*group, [&] { return pattern(char('A' + color)); });
  EXPECT_EQ(id, pattern(char('A' + color))) << "rank " << g_world->rank() << ", group " << color;
}

TEST(NcclId, WithoutADeviceTheCommunicatorIsAClearErrorOnEveryRank) {
  if (cuda::available()) GTEST_SKIP() << "a CUDA device is present";
  // The id exchange runs first (so no rank waits for one that failed), then the device check.
  const std::string err =
      error_of([] { dist::nccl_communicator_for_launch(g_launch, g_world, NcclOptions{}); });
  EXPECT_NE(err.find("no CUDA device"), std::string::npos) << err;
  EXPECT_NE(err.find("rank " + std::to_string(g_world->rank())), std::string::npos) << err;
  EXPECT_NE(error_of([] { dist::device_for_launch(g_launch); }).find("needs a CUDA device"),
            std::string::npos);
}

// ---- Collectives (one GPU per rank) ----

// Why the collectives cannot run here, or "" when they can.
std::string why_no_collectives() {
  const cuda::DeviceProbe& p = cuda::probe_devices();
  if (p.count == 0) return "no CUDA device: " + p.reason;
  if (g_world->world_size() > p.count)
    return std::to_string(g_world->world_size()) + " ranks but " + std::to_string(p.count) +
           " GPU(s): NCCL needs one GPU per rank (run at most one rank per GPU)";
  return "";
}

std::shared_ptr<NcclCommunicator> g_nccl;          // over g_world, made by the first test
std::shared_ptr<NcclCommunicator> g_nccl_grouped;  // the same, always on the grouped path

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = why_no_collectives();
    if (!why.empty()) GTEST_SKIP() << why;
    if (!g_nccl) {
      g_nccl = dist::nccl_communicator_for_launch(g_launch, g_world, NcclOptions{});
      NcclOptions grouped;
      grouped.always_grouped = true;
      g_nccl_grouped = dist::nccl_communicator_for_launch(g_launch, g_world, grouped);
    }
    ASSERT_EQ(g_nccl->rank(), g_world->rank());
    ASSERT_EQ(g_nccl->world_size(), g_world->world_size());
  }
  int rank() const { return g_world->rank(); }
  int world() const { return g_world->world_size(); }
  int dev() const { return g_nccl->device(); }
  Tensor on_device(const std::vector<float>& v, DType t = DType::f32) const {
    return cuda::to_device(Tensor::from_vector(v, Shape{int64_t(v.size())}).to(t), dev());
  }
  static std::vector<float> back(const Tensor& d) {
    return cuda::to_host(d).to(DType::f32).to_vector();
  }
};

// Small integers: every sum below is exact in f32 (and in bf16 where used).
std::vector<float> rank_values(int r, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float((r + 1) * (i % 7) - 3);
  return v;
}
std::vector<float> summed_values(int world, int64_t n) {
  std::vector<float> s(static_cast<size_t>(n), 0.f);
  for (int r = 0; r < world; ++r) {
    const std::vector<float> v = rank_values(r, n);
    for (size_t i = 0; i < s.size(); ++i) s[i] += v[i];
  }
  return s;
}

TEST_F(Nccl, AllReduceSumAndAverage) {
  const int64_t n = 1037;
  Tensor s = on_device(rank_values(rank(), n));
  Tensor a = on_device(rank_values(rank(), n));
  WorkHandle ws = g_nccl->all_reduce_async(s, ReduceOp::sum);
  WorkHandle wa = g_nccl->all_reduce_async(a, ReduceOp::average);
  wa->wait();
  ws->wait();
  const std::vector<float> want = summed_values(world(), n);
  EXPECT_EQ(back(s), want);
  // ncclAvg may scale each term by 1/N before summing: one rounding per term.
  const std::vector<float> avg = back(a);
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(avg[i], want[i] / float(world()), 1e-6f * (1.f + std::fabs(want[i])))
        << "element " << i;
  EXPECT_TRUE(ws->done());
  EXPECT_GE(ws->end_time(), ws->start_time());
}

TEST_F(Nccl, AllReduceBf16) {
  const int64_t n = 301;
  Tensor t = on_device(rank_values(rank(), n), DType::bf16);
  g_nccl->all_reduce(t, ReduceOp::sum);
  EXPECT_EQ(back(t), summed_values(world(), n));  // |sums| <= 3 N(N+1): exact in bf16 up to 8 ranks
}

// Counts that differ between ranks, with an empty part when there are several ranks.
std::vector<int64_t> unequal_counts(int world) {
  std::vector<int64_t> c;
  for (int r = 0; r < world; ++r) c.push_back(r == 1 ? 0 : 5 + 3 * r);
  return c;
}

void check_reduce_scatter(NcclCommunicator& comm, int world, int rank,
                          const std::vector<int64_t>& counts, bool in_place) {
  int64_t n = 0, off = 0;
  for (int r = 0; r < world; ++r) n += counts[size_t(r)], off += r < rank ? counts[size_t(r)] : 0;
  Tensor in = cuda::to_device(Tensor::from_vector(rank_values(rank, n), Shape{n}), comm.device());
  Tensor out = in_place ? in.slice_rows(off, off + counts[size_t(rank)])
                        : cuda::zeros(Shape{counts[size_t(rank)]}, DType::f32, comm.device());
  comm.reduce_scatter(in, out, counts, ReduceOp::sum);
  const std::vector<float> all = summed_values(world, n);
  const std::vector<float> want(all.begin() + off, all.begin() + off + counts[size_t(rank)]);
  EXPECT_EQ(cuda::to_host(out).to_vector(), want)
      << (in_place ? "in place" : "out of place") << ", rank " << rank;
}

TEST_F(Nccl, ReduceScatterWithEqualAndUnequalCounts) {
  const std::vector<int64_t> equal(size_t(world()), 129);
  for (NcclCommunicator* c : {g_nccl.get(), g_nccl_grouped.get()})
    for (bool in_place : {false, true}) {
      SCOPED_TRACE(c == g_nccl.get() ? "ncclReduceScatter when counts are equal" : "grouped");
      check_reduce_scatter(*c, world(), rank(), equal, in_place);
      check_reduce_scatter(*c, world(), rank(), unequal_counts(world()), in_place);
    }
}

void check_all_gather(NcclCommunicator& comm, int world, int rank,
                      const std::vector<int64_t>& counts, bool in_place) {
  int64_t n = 0, off = 0;
  for (int r = 0; r < world; ++r) n += counts[size_t(r)], off += r < rank ? counts[size_t(r)] : 0;
  std::vector<float> want;  // rank r's part is rank_values(r, counts[r])
  for (int r = 0; r < world; ++r) {
    const std::vector<float> v = rank_values(r, counts[size_t(r)]);
    want.insert(want.end(), v.begin(), v.end());
  }
  Tensor out = cuda::zeros(Shape{n}, DType::f32, comm.device());
  const Tensor mine =
      Tensor::from_vector(rank_values(rank, counts[size_t(rank)]), Shape{counts[size_t(rank)]});
  Tensor in;
  if (in_place) {
    in = out.slice_rows(off, off + counts[size_t(rank)]);
    if (mine.numel() > 0) cuda::copy_h2d(in.raw_data(), mine.raw_data(), mine.nbytes());
    cuda::synchronize(cuda::current_stream());
  } else {
    in = cuda::to_device(mine, comm.device());
  }
  comm.all_gather(in, out, counts);
  EXPECT_EQ(cuda::to_host(out).to_vector(), want)
      << (in_place ? "in place" : "out of place") << ", rank " << rank;
}

TEST_F(Nccl, AllGatherWithEqualAndUnequalCounts) {
  const std::vector<int64_t> equal(size_t(world()), 77);
  for (NcclCommunicator* c : {g_nccl.get(), g_nccl_grouped.get()})
    for (bool in_place : {false, true}) {
      SCOPED_TRACE(c == g_nccl.get() ? "ncclAllGather when counts are equal" : "grouped");
      check_all_gather(*c, world(), rank(), equal, in_place);
      check_all_gather(*c, world(), rank(), unequal_counts(world()), in_place);
    }
}

TEST_F(Nccl, BroadcastFromTheLastRank) {
  const int root = world() - 1;
  Tensor t = on_device(rank_values(rank(), 513));
  g_nccl->broadcast(t, root);
  EXPECT_EQ(back(t), rank_values(root, 513));
}

TEST_F(Nccl, BarrierCompletes) {
  WorkHandle w = g_nccl->barrier_async();
  g_nccl->wait_host(w);
  EXPECT_TRUE(w->done());
  EXPECT_GT(w->end_time(), 0.0);
}

// A host function on a stream that holds the stream until the test opens the gate: it makes
// "the collective has not started yet" certain rather than likely.
struct Gate {
  std::atomic<bool> open{false};
  static void CUDART_CB hold(void* p) {
    auto* g = static_cast<Gate*>(p);
    while (!g->open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  void close_on(cudaStream_t s) { CUDA_CHECK(cudaLaunchHostFunc(s, &Gate::hold, this)); }
};

struct ComputeStream {
  ComputeStream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~ComputeStream() {
    cuda::device_allocator().forget_stream(s);
    cudaStreamDestroy(s);
  }
  cudaStream_t s = nullptr;
};

TEST_F(Nccl, CollectivesAreOrderedAgainstTheComputeStreamBothWays) {
  ComputeStream compute;
  cuda::StreamGuard guard(compute.s);
  const int64_t part = 1 << 20;
  std::vector<int64_t> counts(size_t(world()), part);
  Tensor in = cuda::zeros(Shape{part * world()}, DType::f32, dev());
  Tensor out = cuda::zeros(Shape{part}, DType::f32, dev());
  cuda::synchronize(compute.s);
  // The compute stream is held, then fills `in` with 7s: a collective that did not wait for
  // it would reduce the zeros.
  Gate gate;
  gate.close_on(compute.s);
  cuda::fill(in.raw_data(), DType::f32, 7.0, in.numel(), compute.s);
  WorkHandle w = g_nccl->reduce_scatter_async(in, out, counts, ReduceOp::sum);
  EXPECT_FALSE(w->done()) << "the collective finished before the data it reads was written";
  w->wait();  // device-side: the compute stream waits for the collective
  // Doubles the result: run before the collective had written it, it would double zeros.
  cuda::scale(out.data<float>(), out.data<float>(), 2.f, part, compute.s);
  gate.open = true;
  const std::vector<float> got = cuda::to_host(out).to_vector();  // synchronises compute.s
  EXPECT_EQ(got, std::vector<float>(size_t(part), 14.f * float(world())));
  EXPECT_TRUE(w->done());
}

TEST_F(Nccl, ADroppedHandleStaysTrackedUntilTheDeviceIsDone) {
  ComputeStream compute;
  cuda::StreamGuard guard(compute.s);
  Gate gate;
  gate.close_on(compute.s);
  {
    Tensor t = cuda::zeros(Shape{4096}, DType::f32, dev());
    g_nccl->all_reduce_async(t, ReduceOp::sum);  // handle and tensor dropped at once
  }
  EXPECT_EQ(g_nccl->in_flight(), 1u) << "the collective cannot have run: its stream is held";
  gate.open = true;
  cuda::synchronize(compute.s);
  g_nccl->wait_host(g_nccl->barrier_async());
  EXPECT_EQ(g_nccl->in_flight(), 0u);
}

TEST_F(Nccl, ArgumentErrorsNameTheCallAndWhatWasExpected) {
  Tensor host = Tensor::zeros(Shape{8});
  EXPECT_NE(error_of([&] { g_nccl->all_reduce(host); }).find("is on cpu, expected cuda:"),
            std::string::npos);
  Tensor half = cuda::zeros(Shape{8}, DType::f16, dev());
  EXPECT_NE(error_of([&] { g_nccl->all_reduce(half); }).find("expected f32 or bf16"),
            std::string::npos);
  Tensor in = cuda::zeros(Shape{8}, DType::f32, dev());
  std::vector<int64_t> too_many(size_t(world()) + 1, 0);
  too_many[0] = 8;
  EXPECT_NE(error_of([&] { g_nccl->reduce_scatter(in, in, too_many); }).find("counts for a"),
            std::string::npos);
  EXPECT_NE(error_of([&] { g_nccl->broadcast(in, world()); }).find("out of range"),
            std::string::npos);
}

// One rank per process here (a LocalCommunicator bootstrap): a collective held back past
// timeout_s goes to on_failure naming it, and the communicator refuses further work.
TEST_F(Nccl, WatchdogReportsACollectiveStuckPastTheTimeout) {
  std::atomic<bool> reported{false};
  std::string message;
  NcclOptions opt;
  opt.timeout_s = 0.3;
  opt.poll_s = 0.02;
  opt.on_failure = [&](const std::string& m) {
    message = m;
    reported = true;
  };
  ComputeStream compute;
  {
    NcclCommunicator solo(std::make_shared<LocalCommunicator>(), dev(), opt);
    cuda::StreamGuard guard(compute.s);
    Gate gate;
    gate.close_on(compute.s);
    WorkHandle w = solo.barrier_async();
    for (int i = 0; i < 2000 && !reported; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    gate.open = true;
    cuda::synchronize(compute.s);
    solo.wait_host(w);  // nothing of it left on the device when the destructor aborts NCCL
    ASSERT_TRUE(reported) << "no report within 20 s for a timeout of 0.3 s";
    EXPECT_NE(message.find("barrier started"), std::string::npos) << message;
    EXPECT_NE(message.find("timeout_s = 0.3"), std::string::npos) << message;
    EXPECT_NE(message.find("rank 0 of 1 on cuda:"), std::string::npos) << message;
    EXPECT_NE(error_of([&] { solo.barrier(); }).find("after an earlier failure"),
              std::string::npos);
  }
}

// ---- Point to point ----

TEST_F(Nccl, RingExchangeInOneBatch) {
  if (world() < 2) GTEST_SKIP() << "needs 2 ranks (mpirun -np 2)";
  const int next = (rank() + 1) % world(), prev = (rank() + world() - 1) % world();
  // Large enough that no send can finish before its recv runs (past the emulated device's
  // socket buffers): as separate calls in stream order this ring deadlocks (tried: each rank's
  // watchdog names its send to the next rank).
  const int64_t n = 1 << 22;
  Tensor out = on_device(rank_values(rank(), n));
  Tensor in = cuda::zeros(Shape{n}, DType::f32, dev());
  WorkHandle w = g_nccl->batch_send_recv_async({P2POp::send(out, next), P2POp::recv(in, prev)});
  g_nccl->wait_host(w);
  EXPECT_EQ(back(in), rank_values(prev, n));
  EXPECT_TRUE(w->done());
}

TEST_F(Nccl, ManyMessagesArriveInTheOrderSent) {
  if (world() < 2) GTEST_SKIP() << "needs 2 ranks (mpirun -np 2)";
  const int r = rank();
  constexpr int kMessages = 12;
  auto size_of = [](int k) { return int64_t(1) << (k % 12); };
  std::vector<Tensor> in;
  WorkHandle last;
  for (int k = 0; k < kMessages && r < 2; ++k) {
    if (r == 0) last = g_nccl->send_async(on_device(rank_values(k, size_of(k))), 1);
    if (r == 1) {
      in.push_back(cuda::zeros(Shape{size_of(k)}, DType::f32, dev()));
      last = g_nccl->recv_async(in.back(), 0);
    }
  }
  if (last) g_nccl->wait_host(last);  // stream order: every earlier transfer is done too
  for (int k = 0; k < kMessages && r == 1; ++k)
    EXPECT_EQ(back(in[size_t(k)]), rank_values(k, size_of(k))) << "message " << k;
}

TEST_F(Nccl, BothDirectionsWithDifferentSizesInOneBatch) {
  const int partner = rank() ^ 1;  // pairs (0, 1), (2, 3), ...
  if (partner >= world()) GTEST_SKIP() << "needs a partner rank (mpirun -np 2)";
  const int64_t mine = 500000 + 1000 * rank(), theirs = 500000 + 1000 * partner;
  Tensor in = cuda::zeros(Shape{theirs}, DType::f32, dev());
  // Both ranks list their send first.
  WorkHandle w = g_nccl->batch_send_recv_async(
      {P2POp::send(on_device(rank_values(rank(), mine)), partner), P2POp::recv(in, partner)});
  g_nccl->wait_host(w);
  EXPECT_EQ(back(in), rank_values(partner, theirs));
}

TEST_F(Nccl, PointToPointArgumentErrorsNameTheCallAndPeer) {
  Tensor t = cuda::zeros(Shape{8}, DType::f32, dev());
  const std::string out_of_range = error_of([&] { g_nccl->send(t, world()); });
  EXPECT_NE(out_of_range.find("send(peer " + std::to_string(world()) + ") of f32[8]"),
            std::string::npos)
      << out_of_range;
  EXPECT_NE(out_of_range.find("out of range"), std::string::npos) << out_of_range;
  EXPECT_NE(error_of([&] { g_nccl->recv(t, rank()); }).find("cannot receive from itself"),
            std::string::npos);
  EXPECT_NE(error_of([&] { g_nccl->send(Tensor::zeros(Shape{8}), 0); }).find("is on cpu"),
            std::string::npos);
  Tensor half = cuda::zeros(Shape{8}, DType::f16, dev());
  EXPECT_NE(error_of([&] { g_nccl->recv(half, 0); }).find("recv(peer 0): t is f16[8]"),
            std::string::npos);
  EXPECT_EQ(g_nccl->in_flight(), 0u) << "a refused transfer must not be started";
}

// Two communicators over the same ranks, each with a short watchdog: on A rank 0 sends and
// rank 1 receives only 1.5 s later; on B the other way round. Each rank's watchdog names the
// transfer its peer left waiting; then the late sides arrive and every transfer completes.
TEST_F(Nccl, TheWatchdogNamesATransferWhosePeerIsLate) {
  if (world() < 2) GTEST_SKIP() << "needs 2 ranks (mpirun -np 2)";
  std::mutex mu;
  std::vector<std::string> reports;
  NcclOptions opt;
  opt.timeout_s = 0.5;
  opt.poll_s = 0.02;
  opt.on_failure = [&](const std::string& m) {
    std::lock_guard<std::mutex> lock(mu);
    reports.push_back(m);
  };
  const int r = rank();
  const int64_t n = 1 << 22;  // past any socket buffer: the send waits for its recv
  Tensor a = r == 0 ? on_device(rank_values(0, n)) : cuda::zeros(Shape{n}, DType::f32, dev());
  Tensor b = r == 0 ? cuda::zeros(Shape{n}, DType::f32, dev()) : on_device(rank_values(1, n));
  {
    NcclCommunicator comm_a(g_world, dev(), opt), comm_b(g_world, dev(), opt);
    WorkHandle early, late;
    if (r == 0) early = comm_a.send_async(a, 1);
    if (r == 1) early = comm_b.send_async(b, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    if (r == 0) late = comm_b.recv_async(b, 1);
    if (r == 1) late = comm_a.recv_async(a, 0);
    if (r < 2) {
      comm_a.wait_host(r == 0 ? early : late);
      comm_b.wait_host(r == 0 ? late : early);
    }
  }
  if (r == 0) {
    EXPECT_EQ(back(b), rank_values(1, n));
  } else if (r == 1) {
    EXPECT_EQ(back(a), rank_values(0, n));
  }
  if (r >= 2) return;
  ASSERT_EQ(reports.size(), 1u) << "one report per rank: the late side's own transfer is quick";
  const std::string want =
      r == 0 ? "send of f32[4194304] to rank 1 started" : "send of f32[4194304] to rank 0 started";
  EXPECT_NE(reports[0].find(want), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("timeout_s = 0.5"), std::string::npos) << reports[0];
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  g_launch = detect_launch();
  g_world = communicator_for_launch(g_launch);
  if (g_world->rank() == 0)
    std::printf("id exchange over: %s (%s)\n", g_world->describe().c_str(),
                g_launch.describe().c_str());
  tessera::testing::print_passes_on_rank0_only(g_world->rank());
  const int rc = RUN_ALL_TESTS();
  // NCCL before MPI: the NCCL communicators' teardown may still use the bootstrap.
  g_nccl.reset();
  g_nccl_grouped.reset();
  g_world.reset();
  mpi_shutdown();
  return rc;
}
