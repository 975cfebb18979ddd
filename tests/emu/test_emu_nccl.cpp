// The emulated NCCL (src/emu/nccl*.cpp) through its API, used the way src/dist/nccl_comm.cu uses
// it. One binary, two ways to run it:
//   test_emu_nccl                  one process: the world communicator has one rank
//   mpirun -np N test_emu_nccl     N processes: the world communicator spans them (rank 0's
//                                  unique id goes to the others over MPI)
// Every rank runs every test, and issues all its collectives before checking anything (a rank
// that returned early would leave the others waiting). The tests named "...Threads..." run
// several ranks as threads of one process, so the transport is exercised without mpirun too.
// Failures that fault the device (a peer that aborts or dies, ranks that disagree) run as death
// tests: the fault poisons the whole process.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/half.h"
#include "mpi/rank_output.h"

#if TESSERA_HAVE_MPI
#include <mpi.h>
#endif

extern char** environ;

namespace {

int g_rank = 0, g_size = 1;

// ---- helpers ----

void cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

void nccl(ncclResult_t r, const char* what, ncclComm_t comm = nullptr) {
  if (r != ncclSuccess)
    throw std::runtime_error(std::string(what) + ": " + ncclGetErrorString(r) + ": " +
                             ncclGetLastError(comm));
}

// A device buffer of n elements of T.
template <class T>
class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(n) {
    void* p = nullptr;
    cuda(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    p_ = static_cast<T*>(p);
  }
  explicit DevBuf(const std::vector<T>& v) : DevBuf(v.size()) { put(v); }
  ~DevBuf() { (void)cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void put(const std::vector<T>& v, size_t at = 0) {
    cuda(cudaMemcpy(p_ + at, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "put");
  }
  std::vector<T> host() const {
    std::vector<T> v(n_);
    cuda(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "host");
    return v;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// Rank 0's new unique id, on every rank of the world.
ncclUniqueId world_id() {
  ncclUniqueId id{};
  if (g_rank == 0) nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
#if TESSERA_HAVE_MPI
  MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, MPI_COMM_WORLD);
#endif
  return id;
}

// Expects `bytes` at p to be the same on every rank of the world.
void expect_same_on_every_rank(const void* p, size_t bytes, const std::string& what) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < bytes; ++i)
    h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
#if TESSERA_HAVE_MPI
  std::vector<uint64_t> all(static_cast<size_t>(g_size));
  MPI_Allgather(&h, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (int r = 1; r < g_size; ++r)
    EXPECT_EQ(all[size_t(r)], all[0]) << what << ": rank " << r << " differs from rank 0";
#else
  (void)h;
  (void)what;
#endif
}

// Rank r's contribution: not small integers, so that the order of the sum shows.
// Not inlined: one compiled body for every caller, so that -march=native's FMA contraction
// cannot round the expected values differently from the ones uploaded.
[[gnu::noinline]] std::vector<float> rank_values(int r, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = 0.1f * float((r + 1) * int(i % 7)) - 0.3f + 1e-3f * float(i);
  return v;
}

// The sum over ranks in rank order, in f32 (what the emulator promises, bit for bit).
std::vector<float> rank_sum(int nranks, size_t n, size_t offset = 0) {
  std::vector<float> s;
  for (int r = 0; r < nranks; ++r) {
    const std::vector<float> v = rank_values(r, offset + n);
    if (r == 0)
      s.assign(v.begin() + long(offset), v.end());
    else
      for (size_t i = 0; i < n; ++i) s[i] += v[offset + i];
  }
  return s;
}

std::vector<tessera::bf16> to_bf16(const std::vector<float>& v) {
  std::vector<tessera::bf16> b;
  for (float x : v) b.push_back(tessera::float_to_bf16(x));
  return b;
}

std::vector<uint16_t> bits(const std::vector<tessera::bf16>& v) {
  std::vector<uint16_t> b;
  for (tessera::bf16 x : v) b.push_back(x.bits);
  return b;
}

// Runs body(rank) for ranks 0..n-1 on n threads; rethrows the first exception.
void run_ranks(int n, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(errors[size_t(r)], "") << "thread rank " << r;
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// ---- the world communicator ----

struct World {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
};
World g_world;  // made by the first test that needs it (every rank runs the same tests)

World& world() {
  if (!g_world.comm) {
    cuda(cudaStreamCreateWithFlags(&g_world.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    nccl(ncclCommInitRank(&g_world.comm, g_size, world_id(), g_rank), "ncclCommInitRank");
  }
  return g_world;
}

void sync_world() {
  cuda(cudaStreamSynchronize(world().stream), "cudaStreamSynchronize");
}

TEST(EmuNccl, VersionAndLayoutMatchNccl228) {
  static_assert(NCCL_VERSION_CODE == NCCL_VERSION(2, 28, 9));
  static_assert(NCCL_VERSION(2, 8, 4) == 2804, "codes before 2.9 have the old form");
  static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES && NCCL_UNIQUE_ID_BYTES == 128);
  static_assert(sizeof(ncclConfig_t) == 80, "NCCL 2.28's ncclConfig_v22800");
  static_assert(ncclAvg == 4 && ncclBfloat16 == 9 && ncclInProgress == 7);
  int v = 0;
  ASSERT_EQ(ncclGetVersion(&v), ncclSuccess);
  EXPECT_EQ(v, 22809);
}

TEST(EmuNccl, NewIdsDiffer) {
  ncclUniqueId a{}, b{};
  ASSERT_EQ(ncclGetUniqueId(&a), ncclSuccess);
  ASSERT_EQ(ncclGetUniqueId(&b), ncclSuccess);
  EXPECT_NE(std::memcmp(a.internal, b.internal, sizeof a.internal), 0);
}

TEST(EmuNccl, CommunicatorReportsItsRankSizeAndDevice) {
  int n = 0, r = -1, d = -1;
  ASSERT_EQ(ncclCommCount(world().comm, &n), ncclSuccess);
  ASSERT_EQ(ncclCommUserRank(world().comm, &r), ncclSuccess);
  ASSERT_EQ(ncclCommCuDevice(world().comm, &d), ncclSuccess);
  EXPECT_EQ(n, g_size);
  EXPECT_EQ(r, g_rank);
  EXPECT_EQ(d, 0);
  ncclResult_t async = ncclInternalError;
  ASSERT_EQ(ncclCommGetAsyncError(world().comm, &async), ncclSuccess);
  EXPECT_EQ(async, ncclSuccess);
}

TEST(EmuNccl, AllReduceSumAndAverageF32) {
  const size_t n = 1037;
  const World& w = world();
  DevBuf<float> in(rank_values(g_rank, n)), sum(n), avg(rank_values(g_rank, n));
  nccl(ncclAllReduce(in.get(), sum.get(), n, ncclFloat32, ncclSum, w.comm, w.stream), "sum");
  nccl(ncclAllReduce(avg.get(), avg.get(), n, ncclFloat32, ncclAvg, w.comm, w.stream), "avg");
  sync_world();
  const std::vector<float> want = rank_sum(g_size, n);
  std::vector<float> want_avg = want;
  for (float& x : want_avg) x /= float(g_size);  // the emulator: the sum, divided once
  const std::vector<float> got = sum.host(), got_avg = avg.host();
  EXPECT_EQ(got, want);
  EXPECT_EQ(got_avg, want_avg);
  EXPECT_EQ(in.host(), rank_values(g_rank, n)) << "sendbuff must not change";
  expect_same_on_every_rank(got.data(), got.size() * sizeof(float), "sum");
  expect_same_on_every_rank(got_avg.data(), got_avg.size() * sizeof(float), "average");
}

TEST(EmuNccl, AllReduceBf16AccumulatesInF32AndRoundsOnce) {
  const size_t n = 301;
  const World& w = world();
  const std::vector<tessera::bf16> mine = to_bf16(rank_values(g_rank, n));
  DevBuf<tessera::bf16> sum(mine), avg(mine);
  nccl(ncclAllReduce(sum.get(), sum.get(), n, ncclBfloat16, ncclSum, w.comm, w.stream), "sum");
  nccl(ncclAllReduce(avg.get(), avg.get(), n, ncclBfloat16, ncclAvg, w.comm, w.stream), "avg");
  sync_world();
  std::vector<float> acc(n, 0.f);
  for (int r = 0; r < g_size; ++r) {
    const std::vector<tessera::bf16> v = to_bf16(rank_values(r, n));
    for (size_t i = 0; i < n; ++i)
      acc[i] = r == 0 ? tessera::bf16_to_float(v[i]) : acc[i] + tessera::bf16_to_float(v[i]);
  }
  std::vector<float> mean = acc;
  for (float& x : mean) x /= float(g_size);
  EXPECT_EQ(bits(sum.host()), bits(to_bf16(acc)));
  EXPECT_EQ(bits(avg.host()), bits(to_bf16(mean)));
  const std::vector<tessera::bf16> got = sum.host();
  expect_same_on_every_rank(got.data(), got.size() * 2, "bf16 sum");
}

TEST(EmuNccl, AllReduceF16AndIntegerOps) {
  const World& w = world();
  std::vector<tessera::f16> h(64);
  for (size_t i = 0; i < h.size(); ++i)
    h[i] = tessera::float_to_f16(0.25f * float(i) + float(g_rank));
  std::vector<int32_t> ints(16);
  for (size_t i = 0; i < ints.size(); ++i) ints[i] = int32_t(i) * (g_rank % 2 ? -1 : 1) + g_rank;
  std::vector<int64_t> big(4, int64_t(1) << 40);
  DevBuf<tessera::f16> dh(h);
  DevBuf<int32_t> dmax(ints), dmin(ints), dprod(std::vector<int32_t>(16, 2));
  DevBuf<int64_t> dbig(big);
  nccl(ncclAllReduce(dh.get(), dh.get(), h.size(), ncclFloat16, ncclSum, w.comm, w.stream), "f16");
  nccl(ncclAllReduce(dmax.get(), dmax.get(), 16, ncclInt32, ncclMax, w.comm, w.stream), "max");
  nccl(ncclAllReduce(dmin.get(), dmin.get(), 16, ncclInt32, ncclMin, w.comm, w.stream), "min");
  nccl(ncclAllReduce(dprod.get(), dprod.get(), 16, ncclInt32, ncclProd, w.comm, w.stream), "prod");
  nccl(ncclAllReduce(dbig.get(), dbig.get(), 4, ncclInt64, ncclSum, w.comm, w.stream), "i64");
  sync_world();
  const std::vector<tessera::f16> gh = dh.host();
  const std::vector<int32_t> gmax = dmax.host(), gmin = dmin.host(), gprod = dprod.host();
  for (size_t i = 0; i < h.size(); ++i) {
    float s = 0;
    for (int r = 0; r < g_size; ++r)
      s += tessera::f16_to_float(tessera::float_to_f16(0.25f * float(i) + float(r)));
    EXPECT_EQ(gh[i].bits, tessera::float_to_f16(s).bits) << i;
  }
  for (size_t i = 0; i < ints.size(); ++i) {
    int32_t mx = INT32_MIN, mn = INT32_MAX;
    for (int r = 0; r < g_size; ++r) {
      const int32_t v = int32_t(i) * (r % 2 ? -1 : 1) + r;
      mx = std::max(mx, v), mn = std::min(mn, v);
    }
    EXPECT_EQ(gmax[i], mx) << i;
    EXPECT_EQ(gmin[i], mn) << i;
    EXPECT_EQ(gprod[i], int32_t(1) << g_size) << i;
  }
  EXPECT_EQ(dbig.host(), std::vector<int64_t>(4, (int64_t(1) << 40) * g_size));
}

// Reduce-scatter and all-gather, out of place and in place (recvbuff = sendbuff + rank * count
// and sendbuff = recvbuff + rank * count, as NCCL defines them).
TEST(EmuNccl, ReduceScatterOutOfPlaceAndInPlace) {
  const size_t part = 129, n = part * size_t(g_size);
  const World& w = world();
  DevBuf<float> in(rank_values(g_rank, n)), out(part), inplace(rank_values(g_rank, n));
  nccl(ncclReduceScatter(in.get(), out.get(), part, ncclFloat32, ncclSum, w.comm, w.stream), "rs");
  nccl(ncclReduceScatter(inplace.get(), inplace.get() + size_t(g_rank) * part, part, ncclFloat32,
                         ncclSum, w.comm, w.stream),
       "rs in place");
  sync_world();
  const std::vector<float> want = rank_sum(g_size, part, size_t(g_rank) * part);
  EXPECT_EQ(out.host(), want);
  const std::vector<float> all = inplace.host();
  EXPECT_EQ(std::vector<float>(all.begin() + long(size_t(g_rank) * part),
                               all.begin() + long(size_t(g_rank + 1) * part)),
            want);
}

TEST(EmuNccl, AllGatherOutOfPlaceAndInPlace) {
  const size_t part = 77, n = part * size_t(g_size);
  const World& w = world();
  DevBuf<float> in(rank_values(g_rank, part)), out(n), inplace(n);
  inplace.put(rank_values(g_rank, part), size_t(g_rank) * part);
  nccl(ncclAllGather(in.get(), out.get(), part, ncclFloat32, w.comm, w.stream), "ag");
  nccl(ncclAllGather(inplace.get() + size_t(g_rank) * part, inplace.get(), part, ncclFloat32,
                     w.comm, w.stream),
       "ag in place");
  sync_world();
  std::vector<float> want;
  for (int r = 0; r < g_size; ++r) {
    const std::vector<float> v = rank_values(r, part);
    want.insert(want.end(), v.begin(), v.end());
  }
  EXPECT_EQ(out.host(), want);
  EXPECT_EQ(inplace.host(), want);
}

TEST(EmuNccl, BroadcastFromTheLastRank) {
  const size_t n = 513;
  const int root = g_size - 1;
  const World& w = world();
  DevBuf<float> in(rank_values(g_rank, n)), out(n), inplace(rank_values(g_rank, n));
  nccl(ncclBroadcast(in.get(), out.get(), n, ncclFloat32, root, w.comm, w.stream), "bcast");
  nccl(ncclBroadcast(inplace.get(), inplace.get(), n, ncclFloat32, root, w.comm, w.stream),
       "bcast in place");
  sync_world();
  EXPECT_EQ(out.host(), rank_values(root, n));
  EXPECT_EQ(inplace.host(), rank_values(root, n));
}

// Counts that differ between ranks, with an empty part when there are several ranks (as
// tests/cuda/test_nccl_comm.cpp uses).
std::vector<size_t> unequal_counts(int nranks) {
  std::vector<size_t> c;
  for (int r = 0; r < nranks; ++r) c.push_back(r == 1 ? 0 : 5 + 3 * size_t(r));
  return c;
}

// The unequal reduce-scatter of src/dist/nccl_comm.cu: one ncclReduce per part, rooted at its
// owner, in one group; only the root writes its recvbuff, the others pass their own send range.
TEST(EmuNccl, GroupedReducesIntoEachRoot) {
  const std::vector<size_t> counts = unequal_counts(g_size);
  std::vector<size_t> off(1, 0);
  for (size_t c : counts) off.push_back(off.back() + c);
  const size_t me = size_t(g_rank);
  const World& w = world();
  for (bool in_place : {false, true}) {
    DevBuf<float> in(rank_values(g_rank, off.back())), out(counts[me]);
    float* mine = in_place ? in.get() + off[me] : out.get();
    nccl(ncclGroupStart(), "ncclGroupStart");
    for (size_t r = 0; r < counts.size(); ++r) {
      if (counts[r] == 0) continue;
      float* src = in.get() + off[r];
      nccl(ncclReduce(src, r == me ? mine : src, counts[r], ncclFloat32, ncclSum, int(r), w.comm,
                      w.stream),
           "ncclReduce");
    }
    nccl(ncclGroupEnd(), "ncclGroupEnd");
    sync_world();
    const std::vector<float> all = in.host();
    const std::vector<float> got =
        in_place ? std::vector<float>(all.begin() + long(off[me]), all.begin() + long(off[me + 1]))
                 : out.host();
    EXPECT_EQ(got, rank_sum(g_size, counts[me], off[me]))
        << (in_place ? "in place" : "out of place");
  }
}

// The unequal all-gather of nccl_comm.cu: one ncclBroadcast per part from its owner.
TEST(EmuNccl, GroupedBroadcastsGatherUnequalParts) {
  const std::vector<size_t> counts = unequal_counts(g_size);
  std::vector<size_t> off(1, 0);
  for (size_t c : counts) off.push_back(off.back() + c);
  const size_t me = size_t(g_rank);
  const World& w = world();
  DevBuf<float> out(off.back());
  out.put(rank_values(g_rank, counts[me]), off[me]);  // in place: the input is already there
  nccl(ncclGroupStart(), "ncclGroupStart");
  for (size_t r = 0; r < counts.size(); ++r) {
    if (counts[r] == 0) continue;
    float* dst = out.get() + off[r];
    nccl(ncclBroadcast(dst, dst, counts[r], ncclFloat32, int(r), w.comm, w.stream), "bcast");
  }
  nccl(ncclGroupEnd(), "ncclGroupEnd");
  sync_world();
  std::vector<float> want;
  for (int r = 0; r < g_size; ++r) {
    const std::vector<float> v = rank_values(r, counts[size_t(r)]);
    want.insert(want.end(), v.begin(), v.end());
  }
  EXPECT_EQ(out.host(), want);
}

// Every rank sends to the next and receives from the previous, 4 MB each way: more than a
// socket buffer holds, so the pair only completes if both directions progress together.
TEST(EmuNccl, SendRecvRingInOneGroupDoesNotDeadlock) {
  const size_t n = size_t(1) << 20;
  const int next = (g_rank + 1) % g_size, prev = (g_rank + g_size - 1) % g_size;
  const World& w = world();
  DevBuf<float> out(rank_values(g_rank, n)), in(n);
  nccl(ncclGroupStart(), "ncclGroupStart");
  nccl(ncclSend(out.get(), n, ncclFloat32, next, w.comm, w.stream), "ncclSend");
  nccl(ncclRecv(in.get(), n, ncclFloat32, prev, w.comm, w.stream), "ncclRecv");
  nccl(ncclGroupEnd(), "ncclGroupEnd");
  sync_world();
  EXPECT_EQ(in.host(), rank_values(prev, n));
}

// A collective runs after the work queued before it on its stream, and work queued after it
// sees its result; across streams, an event orders it.
TEST(EmuNccl, CollectivesFollowStreamOrder) {
  const size_t n = 4096;
  const World& w = world();
  cudaStream_t other = nullptr;
  cudaEvent_t filled = nullptr;
  cuda(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking), "cudaStreamCreate");
  cuda(cudaEventCreateWithFlags(&filled, cudaEventDisableTiming), "cudaEventCreate");
  const std::vector<float> mine = rank_values(g_rank, n);
  std::vector<float> back(n, -1.f);
  DevBuf<float> buf(n);
  cuda(cudaMemsetAsync(buf.get(), 0, n * sizeof(float), other), "memset");
  cuda(cudaMemcpyAsync(buf.get(), mine.data(), n * sizeof(float), cudaMemcpyHostToDevice, other),
       "h2d");
  cuda(cudaEventRecord(filled, other), "record");
  cuda(cudaStreamWaitEvent(w.stream, filled, 0), "wait");
  nccl(ncclAllReduce(buf.get(), buf.get(), n, ncclFloat32, ncclSum, w.comm, w.stream), "sum");
  cuda(cudaMemcpyAsync(back.data(), buf.get(), n * sizeof(float), cudaMemcpyDeviceToHost, w.stream),
       "d2h");
  sync_world();
  EXPECT_EQ(back, rank_sum(g_size, n));
  (void)cudaEventDestroy(filled);
  (void)cudaStreamDestroy(other);
}

// Holds a stream until opened: makes "has not run yet" certain rather than likely.
struct Gate {
  std::atomic<bool> open{false};
  static void hold(void* p) {
    while (!static_cast<Gate*>(p)->open) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
};

// A group with calls on two streams runs after the earlier work of both, and the later work of
// both sees its results (NCCL joins the streams of a group).
TEST(EmuNccl, AGroupAcrossStreamsOrdersEveryStream) {
  const size_t n = 1000;
  const World& w = world();
  cudaStream_t other = nullptr;
  cuda(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking), "cudaStreamCreate");
  Gate gate;
  const std::vector<float> mine = rank_values(g_rank, n);
  DevBuf<float> a(mine), b(n), after(n);
  cuda(cudaLaunchHostFunc(other, &Gate::hold, &gate), "hold");
  // Staged at the call (pageable source), copied when `other` gets there.
  cuda(cudaMemcpyAsync(b.get(), mine.data(), n * sizeof(float), cudaMemcpyHostToDevice, other),
       "h2d");
  nccl(ncclGroupStart(), "ncclGroupStart");
  nccl(ncclAllReduce(a.get(), a.get(), n, ncclFloat32, ncclSum, w.comm, w.stream), "on stream");
  nccl(ncclAllReduce(b.get(), b.get(), n, ncclFloat32, ncclSum, w.comm, other), "on other");
  nccl(ncclGroupEnd(), "ncclGroupEnd");
  cuda(cudaMemcpyAsync(after.get(), b.get(), n * sizeof(float), cudaMemcpyDeviceToDevice, other),
       "d2d");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(cudaStreamQuery(w.stream), cudaErrorNotReady) << "the group ran before `other`'s work";
  gate.open = true;
  sync_world();
  cuda(cudaStreamSynchronize(other), "sync other");
  EXPECT_EQ(a.host(), rank_sum(g_size, n));
  EXPECT_EQ(after.host(), rank_sum(g_size, n));
  (void)cudaStreamDestroy(other);
}

// Calls on one communicator from two streams run in the order they were made, whichever stream
// is free first (every rank must see the same order).
TEST(EmuNccl, ACommunicatorUsedFromTwoStreamsKeepsIssueOrder) {
  const size_t n = 300;
  const World& w = world();
  cudaStream_t other = nullptr;
  cuda(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking), "cudaStreamCreate");
  Gate gate;
  DevBuf<float> first(rank_values(g_rank, n)), second(rank_values(g_rank, 2 * n));
  cuda(cudaLaunchHostFunc(w.stream, &Gate::hold, &gate), "hold");
  nccl(ncclAllReduce(first.get(), first.get(), n, ncclFloat32, ncclSum, w.comm, w.stream), "1st");
  nccl(ncclAllGather(second.get(), second.get(), 0, ncclFloat32, w.comm, other), "empty");
  nccl(ncclAllReduce(second.get(), second.get(), 2 * n, ncclFloat32, ncclMax, w.comm, other),
       "2nd");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(cudaStreamQuery(other), cudaErrorNotReady) << "the later calls did not wait";
  gate.open = true;
  cuda(cudaStreamSynchronize(other), "sync other");
  sync_world();
  EXPECT_EQ(first.host(), rank_sum(g_size, n));
  std::vector<float> want = rank_values(0, 2 * n);
  for (int r = 1; r < g_size; ++r) {
    const std::vector<float> v = rank_values(r, 2 * n);
    for (size_t i = 0; i < want.size(); ++i) want[i] = std::max(want[i], v[i]);
  }
  EXPECT_EQ(second.host(), want);
  (void)cudaStreamDestroy(other);
}

TEST(EmuNccl, ArgumentErrorsAreReportedAtTheCall) {
  const World& w = world();
  DevBuf<float> buf(8);
  EXPECT_EQ(ncclAllReduce(buf.get(), buf.get(), 8, ncclFloat32, ncclSum, nullptr, w.stream),
            ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(buf.get(), buf.get(), 8, ncclFloat32, g_size, w.comm, w.stream),
            ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(w.comm)).find("root " + std::to_string(g_size)),
            std::string::npos)
      << ncclGetLastError(w.comm);
  EXPECT_EQ(ncclAllReduce(buf.get(), buf.get(), 8, ncclFloat8e4m3, ncclSum, w.comm, w.stream),
            ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(buf.get(), buf.get(), 8, ncclDataType_t(42), ncclSum, w.comm, w.stream),
            ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(nullptr, buf.get(), 8, ncclFloat32, ncclSum, w.comm, w.stream),
            ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  EXPECT_STREQ(ncclGetErrorString(ncclInvalidUsage), "invalid usage (see ncclGetLastError)");
  // A failed call inside a group fails the group: none of it runs, on any rank.
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(buf.get(), buf.get(), 8, ncclFloat32, ncclSum, w.comm, w.stream),
            ncclSuccess);
  EXPECT_EQ(ncclReduce(buf.get(), buf.get(), 8, ncclFloat32, ncclSum, -1, w.comm, w.stream),
            ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidArgument);
  // ...and the communicator still works (the ranks' collective numbers still agree).
  const std::vector<float> ones(8, 1.f);
  buf.put(ones);
  nccl(ncclAllReduce(buf.get(), buf.get(), 8, ncclFloat32, ncclSum, w.comm, w.stream), "sum");
  sync_world();
  EXPECT_EQ(buf.host(), std::vector<float>(8, float(g_size)));
}

TEST(EmuNccl, FinalizeAndDestroyASecondCommunicator) {
  ncclComm_t c = nullptr;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // as nccl_comm.cu asks; the emulator completes at once
  nccl(ncclCommInitRankConfig(&c, g_size, world_id(), g_rank, &config), "init");
  DevBuf<double> d(std::vector<double>(3, 0.5 + g_rank));
  nccl(ncclAllReduce(d.get(), d.get(), 3, ncclFloat64, ncclMax, c, world().stream), "max", c);
  EXPECT_EQ(ncclCommFinalize(c), ncclSuccess) << ncclGetLastError(c);
  // Finalize does not order the stream before the host's copy (the stream race check found
  // this read without the wait).
  cuda(cudaStreamSynchronize(world().stream), "sync");
  EXPECT_EQ(d.host(), std::vector<double>(3, 0.5 + (g_size - 1)));
  EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
}

// ---- several ranks as threads of this process ----

TEST(EmuNcclThreads, ThreeRanksRunCollectivesAndPointToPoint) {
  const int n = 3;
  const size_t count = 1000;
  ncclUniqueId id{};
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  run_ranks(n, [&](int r) {
    cudaStream_t s = nullptr;
    cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    ncclComm_t c = nullptr;
    nccl(ncclCommInitRank(&c, n, id, r), "init");
    DevBuf<tessera::bf16> sum(to_bf16(rank_values(r, count)));
    DevBuf<float> rs_in(rank_values(r, count * n)), rs_out(count);
    DevBuf<float> ring_out(rank_values(r, count)), ring_in(count), self_in(count);
    nccl(ncclAllReduce(sum.get(), sum.get(), count, ncclBfloat16, ncclSum, c, s), "sum", c);
    nccl(ncclReduceScatter(rs_in.get(), rs_out.get(), count, ncclFloat32, ncclSum, c, s), "rs", c);
    nccl(ncclGroupStart(), "start");
    nccl(ncclRecv(ring_in.get(), count, ncclFloat32, (r + n - 1) % n, c, s), "recv", c);
    nccl(ncclSend(ring_out.get(), count, ncclFloat32, (r + 1) % n, c, s), "send", c);
    nccl(ncclSend(ring_out.get(), count, ncclFloat32, r, c, s), "send to self", c);
    nccl(ncclRecv(self_in.get(), count, ncclFloat32, r, c, s), "recv from self", c);
    nccl(ncclGroupEnd(), "end");
    cuda(cudaStreamSynchronize(s), "sync");
    std::vector<float> acc(count, 0.f);
    for (int q = 0; q < n; ++q) {
      const std::vector<tessera::bf16> v = to_bf16(rank_values(q, count));
      for (size_t i = 0; i < count; ++i)
        acc[i] = q == 0 ? tessera::bf16_to_float(v[i]) : acc[i] + tessera::bf16_to_float(v[i]);
    }
    EXPECT_EQ(bits(sum.host()), bits(to_bf16(acc))) << "rank " << r;
    EXPECT_EQ(rs_out.host(), rank_sum(n, count, size_t(r) * count)) << "rank " << r;
    EXPECT_EQ(ring_in.host(), rank_values((r + n - 1) % n, count)) << "rank " << r;
    EXPECT_EQ(self_in.host(), rank_values(r, count)) << "rank " << r;
    nccl(ncclCommFinalize(c), "finalize", c);
    nccl(ncclCommDestroy(c), "destroy");
    (void)cudaStreamDestroy(s);
  });
}

TEST(EmuNcclThreads, RanksThatDisagreeOnNranksAreRefused) {
  ncclUniqueId id{};
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ScopedEnv quick("TESSERA_EMU_NCCL_INIT_TIMEOUT_S", "20");
  std::vector<ncclResult_t> got(2, ncclSuccess);
  std::vector<std::string> why(2);
  run_ranks(2, [&](int r) {
    ncclComm_t c = nullptr;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // keeps the failed communicator, and its own error message
    got[size_t(r)] = ncclCommInitRankConfig(&c, r == 0 ? 2 : 3, id, r, &config);
    why[size_t(r)] = ncclGetLastError(c);
    if (c) (void)ncclCommAbort(c);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(got[size_t(r)], ncclInvalidUsage) << "rank " << r;
    EXPECT_NE(why[size_t(r)].find("rank 1 joined with nranks = 3"), std::string::npos)
        << why[size_t(r)];
  }
}

TEST(EmuNcclInit, RendezvousTimeoutNamesTheRanksThatNeverArrived) {
  ScopedEnv quick("TESSERA_EMU_NCCL_INIT_TIMEOUT_S", "0.3");
  ncclUniqueId id{};
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c, 3, id, 0), ncclSystemError);
  EXPECT_EQ(c, nullptr);
  const std::string why = ncclGetLastError(nullptr);
  EXPECT_NE(why.find("ranks 1 and 2 never arrived"), std::string::npos) << why;
  EXPECT_NE(why.find("@tessera-nccl-"), std::string::npos) << why;

  // A rank other than 0 says that rank 0 could not be reached.
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  EXPECT_EQ(ncclCommInitRank(&c, 2, id, 1), ncclSystemError);
  EXPECT_NE(std::string(ncclGetLastError(nullptr)).find("rank 0 could not be reached"),
            std::string::npos)
      << ncclGetLastError(nullptr);
}

TEST(EmuNcclInit, NonBlockingFailureLeavesAFailedCommunicator) {
  ScopedEnv quick("TESSERA_EMU_NCCL_INIT_TIMEOUT_S", "0.2");
  ncclUniqueId id{};
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRankConfig(&c, 2, id, 0, &config), ncclSystemError);
  ASSERT_NE(c, nullptr);
  ncclResult_t async = ncclSuccess;
  ASSERT_EQ(ncclCommGetAsyncError(c, &async), ncclSuccess);
  EXPECT_EQ(async, ncclSystemError);
  EXPECT_NE(std::string(ncclGetLastError(c)).find("rank 1 never arrived"), std::string::npos)
      << ncclGetLastError(c);
  EXPECT_EQ(ncclCommAbort(c), ncclSuccess);
}

TEST(EmuNcclInit, BadArgumentsAreRefused) {
  ncclComm_t c = nullptr;
  ncclUniqueId zero{};
  EXPECT_EQ(ncclCommInitRank(&c, 1, zero, 0), ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(nullptr)).find("not from ncclGetUniqueId"),
            std::string::npos);
  ncclUniqueId id{};
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  EXPECT_EQ(ncclCommInitRank(&c, 2, id, 2), ncclInvalidArgument);
  ncclConfig_t raw{};
  EXPECT_EQ(ncclCommInitRankConfig(&c, 1, id, 0, &raw), ncclInvalidArgument);
  EXPECT_EQ(c, nullptr);
}

// Work queued on an aborted communicator does nothing when its stream reaches it.
TEST(EmuNcclInit, AbortedCommunicatorsQueuedWorkDoesNothing) {
  ncclUniqueId id{};
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = nullptr;
  ASSERT_EQ(ncclCommInitRank(&c, 1, id, 0), ncclSuccess);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  Gate gate;
  DevBuf<float> in(std::vector<float>(4, 1.f)), out(std::vector<float>(4, 7.f));
  ASSERT_EQ(cudaLaunchHostFunc(s, &Gate::hold, &gate), cudaSuccess);
  ASSERT_EQ(ncclAllReduce(in.get(), out.get(), 4, ncclFloat32, ncclSum, c, s), ncclSuccess);
  ASSERT_EQ(ncclCommAbort(c), ncclSuccess);
  gate.open = true;
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(out.host(), std::vector<float>(4, 7.f));
  (void)cudaStreamDestroy(s);
}

// ---- failures that fault the device (death tests: the fault poisons the process) ----

// The child's last act: wait for the stream; in the emulator's abort mode the fault has
// already ended the process, naming the collective; otherwise it is printed (by the stream)
// and the error ends it here.
[[noreturn]] void sync_and_die(cudaStream_t s) {
  if (cudaStreamSynchronize(s) != cudaSuccess) std::abort();
  std::exit(0);  // no fault: the death test fails
}

void peer_aborts() {
  ncclUniqueId id{};
  nccl(ncclGetUniqueId(&id), "id");
  std::thread peer([&] {
    ncclComm_t c = nullptr;
    nccl(ncclCommInitRank(&c, 2, id, 1), "init rank 1");
    (void)ncclCommAbort(c);
  });
  ncclComm_t c = nullptr;
  nccl(ncclCommInitRank(&c, 2, id, 0), "init rank 0");
  peer.join();
  cudaStream_t s = nullptr;
  cuda(cudaStreamCreate(&s), "stream");
  DevBuf<float> buf(16);
  nccl(ncclAllReduce(buf.get(), buf.get(), 16, ncclFloat32, ncclSum, c, s), "all-reduce");
  sync_and_die(s);
}

TEST(EmuNcclDeathTest, APeerThatAbortsFailsTheCollective) {
  EXPECT_DEATH(peer_aborts(), "ncclAllReduce: rank 0 of 2: peer rank 1 closed the connection");
}

// Rank 1 is another process (this binary, --emu-nccl-helper), which joins and exits.
void peer_process_exits() {
  ncclUniqueId id{};
  nccl(ncclGetUniqueId(&id), "id");
  std::string hex;
  for (unsigned char b : id.internal) {
    char two[3];
    std::snprintf(two, sizeof two, "%02x", b);
    hex += two;
  }
  std::string flag = "--emu-nccl-helper=" + hex;
  char exe[] = "/proc/self/exe";
  char* argv[] = {exe, flag.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, exe, nullptr, nullptr, argv, environ) != 0) std::exit(0);
  ncclComm_t c = nullptr;
  nccl(ncclCommInitRank(&c, 2, id, 0), "init rank 0");
  cudaStream_t s = nullptr;
  cuda(cudaStreamCreate(&s), "stream");
  DevBuf<float> buf(16);
  nccl(ncclAllReduce(buf.get(), buf.get(), 16, ncclFloat32, ncclSum, c, s), "all-reduce");
  waitpid(pid, nullptr, 0);
  sync_and_die(s);
}

TEST(EmuNcclDeathTest, APeerProcessThatEndsFailsTheCollective) {
  EXPECT_DEATH(peer_process_exits(),
               "ncclAllReduce: rank 0 of 2: peer rank 1 closed the connection");
}

void ranks_disagree() {
  ncclUniqueId id{};
  nccl(ncclGetUniqueId(&id), "id");
  std::thread peer([&] {
    ncclComm_t c = nullptr;
    nccl(ncclCommInitRank(&c, 2, id, 1), "init rank 1");
    cudaStream_t s = nullptr;
    cuda(cudaStreamCreate(&s), "stream");
    DevBuf<float> buf(8);
    nccl(ncclBroadcast(buf.get(), buf.get(), 8, ncclFloat32, 1, c, s), "broadcast");
    (void)cudaStreamSynchronize(s);
  });
  ncclComm_t c = nullptr;
  nccl(ncclCommInitRank(&c, 2, id, 0), "init rank 0");
  cudaStream_t s = nullptr;
  cuda(cudaStreamCreate(&s), "stream");
  DevBuf<float> buf(8);
  nccl(ncclAllReduce(buf.get(), buf.get(), 8, ncclFloat32, ncclSum, c, s), "all-reduce");
  peer.join();
  sync_and_die(s);
}

TEST(EmuNcclDeathTest, RanksThatCallDifferentCollectivesAreReported) {
  EXPECT_DEATH(ranks_disagree(),
               "collective #0 differs between ranks: rank 0 called ncclAllReduce\\(count 8, "
               "ncclFloat32, ncclSum\\), rank 1 called ncclBroadcast\\(count 8, ncclFloat32, "
               "root 1\\)");
}

void host_pointer_to_all_reduce() {
  ncclUniqueId id{};
  nccl(ncclGetUniqueId(&id), "id");
  ncclComm_t c = nullptr;
  nccl(ncclCommInitRank(&c, 1, id, 0), "init");
  cudaStream_t s = nullptr;
  cuda(cudaStreamCreate(&s), "stream");
  static float host[8];
  nccl(ncclAllReduce(host, host, 8, ncclFloat32, ncclSum, c, s), "all-reduce");
  sync_and_die(s);
}

TEST(EmuNcclDeathTest, AHostPointerIsADeviceFault) {
  EXPECT_DEATH(host_pointer_to_all_reduce(), "ncclAllReduce: sendbuff");
}

// --emu-nccl-helper=<hex id>: join as rank 1 of 2, then exit without a word.
int run_helper(const char* hex) {
  ncclUniqueId id{};
  for (size_t i = 0; i < sizeof id.internal && hex[2 * i] && hex[2 * i + 1]; ++i)
    id.internal[i] = char(std::stoi(std::string(hex + 2 * i, 2), nullptr, 16));
  ncclComm_t c = nullptr;
  const ncclResult_t r = ncclCommInitRank(&c, 2, id, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  _exit(r == ncclSuccess ? 0 : 3);
}

}  // namespace

int main(int argc, char** argv) {
  constexpr const char kHelper[] = "--emu-nccl-helper=";
  bool death_child = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], kHelper, sizeof kHelper - 1) == 0)
      return run_helper(argv[i] + sizeof kHelper - 1);
    death_child = death_child || std::strstr(argv[i], "internal_run_death_test") != nullptr;
  }
  ::testing::InitGoogleTest(&argc, argv);
  // Death tests re-run this binary for one test: a fresh process, whatever threads this one has.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
#if TESSERA_HAVE_MPI
  // A death test's child is not an MPI rank (its mpirun environment is its parent's).
  if (!death_child) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  }
#endif
  tessera::testing::print_passes_on_rank0_only(g_rank);
  const int rc = RUN_ALL_TESTS();
  if (g_world.comm) (void)ncclCommDestroy(g_world.comm);
#if TESSERA_HAVE_MPI
  if (!death_child) MPI_Finalize();
#endif
  return rc;
}
