// Distributed training pieces that run in one process: the launcher bootstrap (environment
// variables), shard layouts, the local communicator, gradient buckets and their hooks (with a
// recording communicator that poses as 2 ranks), traces, the sharded optimizer against optim/,
// and every ZeRO stage on one rank against plain training. The multi-process tests are in
// tests/mpi/ and run under mpirun.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "dist/beat.h"
#include "dist/bootstrap.h"
#include "dist/clock.h"
#include "dist/consistency.h"
#include "dist/data_parallel.h"
#include "dist/ddp.h"
#include "dist/grad_buckets.h"
#include "dist/local_comm.h"
#include "dist/mpi_comm.h"
#include "dist/ring_schedule.h"
#include "gradcheck.h"
#include "mpi/tiny_job.h"
#include "nn/gpt.h"
#include "optim/adamw.h"
#include "optim/sgd.h"
#include "scratch.h"
#include "train/model_kinds.h"
#include "train/trainer.h"

using namespace tessera;
using namespace tessera::dist;
using tessera::testing::expect_error;
namespace fs = std::filesystem;

namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

}  // namespace

// ---- Bootstrap ----

TEST(Bootstrap, NoLauncherIsOneProcess) {
  LaunchInfo li = detect_launch(env_of({{"HOME", "/root"}}));
  EXPECT_EQ(li.launcher, "none");
  EXPECT_EQ(li.rank, 0);
  EXPECT_EQ(li.world_size, 1);
  EXPECT_FALSE(li.distributed());
}

TEST(Bootstrap, Mpirun) {
  LaunchInfo li = detect_launch(env_of({{"OMPI_COMM_WORLD_RANK", "3"},
                                        {"OMPI_COMM_WORLD_SIZE", "4"},
                                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}));
  EXPECT_EQ(li.launcher, "mpirun");
  EXPECT_EQ(li.rank, 3);
  EXPECT_EQ(li.world_size, 4);
  EXPECT_EQ(li.local_rank, 1);
  EXPECT_TRUE(li.distributed());
}

TEST(Bootstrap, Slurm) {
  LaunchInfo li =
      detect_launch(env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}}));
  EXPECT_EQ(li.launcher, "slurm");
  EXPECT_EQ(li.rank, 5);
  EXPECT_EQ(li.world_size, 8);
  EXPECT_EQ(li.local_rank, 1);
}

TEST(Bootstrap, Torchrun) {
  LaunchInfo li = detect_launch(env_of({{"RANK", "1"},
                                        {"WORLD_SIZE", "2"},
                                        {"LOCAL_RANK", "0"},
                                        {"MASTER_ADDR", "node7"},
                                        {"MASTER_PORT", "29500"}}));
  EXPECT_EQ(li.launcher, "torchrun");
  EXPECT_EQ(li.rank, 1);
  EXPECT_EQ(li.world_size, 2);
  EXPECT_EQ(li.local_rank, 0);
  EXPECT_EQ(li.master_addr, "node7");
  EXPECT_EQ(li.master_port, 29500);
}

TEST(Bootstrap, MoreSpecificLauncherWinsOverTheSlurmAllocation) {
  // mpirun (or torchrun) inside an sbatch allocation: the allocation's Slurm variables describe
  // the batch step, not this process.
  std::map<std::string, std::string> slurm = {
      {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "0"}};
  auto with_mpi = slurm;
  with_mpi.insert({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"}});
  EXPECT_EQ(detect_launch(env_of(with_mpi)).launcher, "mpirun");
  EXPECT_EQ(detect_launch(env_of(with_mpi)).rank, 2);
  EXPECT_EQ(detect_launch(env_of(with_mpi)).local_rank, 2);  // no local rank given: the rank
  auto with_torch = slurm;
  with_torch.insert({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}});
  EXPECT_EQ(detect_launch(env_of(with_torch)).launcher, "torchrun");
  EXPECT_EQ(detect_launch(env_of(with_torch)).world_size, 2);
}

TEST(Bootstrap, MalformedVariablesAreNamed) {
  expect_error(
      [] {
        detect_launch(env_of({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}}));
      },
      {"OMPI_COMM_WORLD_RANK=4", "outside [0, OMPI_COMM_WORLD_SIZE=4)"});
  expect_error(
      [] {
        detect_launch(env_of({{"SLURM_PROCID", "x1"}, {"SLURM_NTASKS", "2"}}));
      },
      {"SLURM_PROCID=x1", "not an integer"});
  expect_error(
      [] {
        detect_launch(env_of({{"RANK", "0"}}));
      },
      {"RANK is set but WORLD_SIZE is not"});
  expect_error(
      [] {
        detect_launch(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}}));
      },
      {"MASTER_ADDR is not set"});
  expect_error(
      [] {
        detect_launch(env_of(
            {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}));
      },
      {"MASTER_PORT=70000"});
  expect_error(
      [] {
        detect_launch(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "0"}}));
      },
      {"SLURM_NTASKS=0", ">= 1"});
}

TEST(Bootstrap, ReadsTheProcessEnvironment) {
  // The default lookup reads the real environment (restored afterwards).
  const char* names[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "RANK",
                         "WORLD_SIZE",           "SLURM_PROCID",         "SLURM_NTASKS",
                         "SLURM_LOCALID"};
  std::map<std::string, std::optional<std::string>> saved;
  for (const char* n : names) {
    saved[n] = process_env(n);
    unsetenv(n);
  }
  setenv("SLURM_PROCID", "2", 1);
  setenv("SLURM_NTASKS", "3", 1);
  setenv("SLURM_LOCALID", "0", 1);
  LaunchInfo li = detect_launch();
  for (const auto& [n, v] : saved) {
    if (v)
      setenv(n.c_str(), v->c_str(), 1);
    else
      unsetenv(n.c_str());
  }
  EXPECT_EQ(li.launcher, "slurm");
  EXPECT_EQ(li.rank, 2);
  EXPECT_EQ(li.world_size, 3);
  EXPECT_EQ(li.describe(), "rank 2 of 3 (local 0), from slurm");
}

TEST(Bootstrap, FeaturesSayWhetherMpiIsBuiltIn) {
  const std::string line = mpi_feature_line();
  if (mpi_built_in()) {
    EXPECT_EQ(line.rfind("mpi: yes", 0), 0u) << line;
  } else {
    EXPECT_EQ(line.rfind("mpi: no", 0), 0u) << line;
    expect_error([] { mpi_world(); }, {"not built in"});
  }
}

// ---- Shards and the local communicator ----

TEST(ShardLayout, CoversTheBufferWithAlignedBounds) {
  for (int world : {1, 2, 3, 4, 7}) {
    ShardLayout s(1000, world, 16);
    ASSERT_EQ(s.world(), world);
    EXPECT_EQ(s.begin(0), 0);
    EXPECT_EQ(s.end(world - 1), 1000);
    int64_t total = 0;
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(s.begin(r) % 16, 0) << "world " << world << " rank " << r;
      EXPECT_LE(s.begin(r), s.end(r));
      if (r > 0) {
        EXPECT_EQ(s.begin(r), s.end(r - 1));
      }
      total += s.size(r);
    }
    EXPECT_EQ(total, 1000);
  }
  ShardLayout s(1024, 4, 16);  // even split
  EXPECT_EQ(s.size(0), 256);
  EXPECT_EQ(s.size(3), 256);
  EXPECT_EQ(s.counts_in(200, 600), (std::vector<int64_t>{56, 256, 88, 0}));
  EXPECT_EQ(s.counts_in(0, 1024), (std::vector<int64_t>{256, 256, 256, 256}));
  expect_error([&] { s.counts_in(10, 2000); }, {"[10, 2000)", "1024"});
}

// The ring schedules run on n simulated ranks, every rank's step k at once: what a rank sends at
// step k is what the next rank receives at step k, reduce-scatter leaves segment r on rank r
// holding each rank's contribution exactly once, and all-gather then hands every rank every
// segment. Contributions are distinct powers of two, so a sum that counts one twice or misses
// one shows.
// What a heartbeat carries survives the wire: counts, the waiting bit, the oldest operation's
// index, kind and peer; and the kinds are read off the operations' descriptions.
TEST(Beat, RoundTripsAndNamesTheOldestOperation) {
  EXPECT_EQ(op_kind_of("recv of f32[4] from rank 0 (rank 1)"), OpKind::recv);
  EXPECT_EQ(op_kind_of("all_gather_bytes (sizes)"), OpKind::all_gather_bytes);
  EXPECT_EQ(op_kind_of("barrier"), OpKind::barrier);
  EXPECT_EQ(op_kind_of("split"), OpKind::other);
  Beat b;
  b.submitted = 123456789012LL;
  b.waiting = true;
  b.oldest_index = 41;
  b.oldest_kind = OpKind::send;
  b.oldest_peer = 7;
  const Beat back = Beat::decode(b.encode());
  EXPECT_EQ(back.submitted, b.submitted);
  EXPECT_TRUE(back.waiting);
  EXPECT_EQ(back.oldest_index, 41);
  EXPECT_EQ(back.oldest_kind, OpKind::send);
  EXPECT_EQ(back.oldest_peer, 7);
  EXPECT_EQ(back.oldest(), "#41 send to rank 7");
  b.waiting = false;
  b.oldest_kind = OpKind::reduce_scatter;
  b.oldest_peer = -1;
  EXPECT_EQ(Beat::decode(b.encode()).oldest(), "#41 reduce_scatter");
  EXPECT_FALSE(Beat::decode(b.encode()).waiting);
  EXPECT_EQ(Beat::decode(Beat{}.encode()).oldest(), "nothing unfinished");
  // A corrupt word reads as an unknown operation, not out of the kinds' range.
  EXPECT_EQ(Beat::decode({0, 3, -5}).oldest(), "#3 operation");
}

TEST(RingSchedule, ReduceScatterThenAllGatherSumsEachRankOnce) {
  for (int n = 1; n <= 8; ++n) {
    // held[r][s]: what rank r holds for segment s (a bitmask of the ranks summed into it).
    std::vector<std::vector<uint32_t>> held(static_cast<size_t>(n),
                                            std::vector<uint32_t>(static_cast<size_t>(n)));
    for (int r = 0; r < n; ++r)
      for (int s = 0; s < n; ++s) held[size_t(r)][size_t(s)] = 1u << r;
    std::vector<std::vector<RingStep>> reduce, gather;
    for (int r = 0; r < n; ++r) {
      reduce.push_back(ring_reduce_scatter_steps(r, n));
      gather.push_back(ring_all_gather_steps(r, n));
      ASSERT_EQ(reduce.back().size(), size_t(n - 1));
      ASSERT_EQ(gather.back().size(), size_t(n - 1));
    }
    for (int k = 0; k + 1 < n; ++k) {
      std::vector<uint32_t> sent(static_cast<size_t>(n));
      for (int r = 0; r < n; ++r) {
        const RingStep& mine = reduce[size_t(r)][size_t(k)];
        ASSERT_EQ(mine.send_segment, reduce[size_t(ring_next(r, n))][size_t(k)].recv_segment)
            << "n " << n << " rank " << r << " step " << k;
        sent[size_t(r)] = held[size_t(r)][size_t(mine.send_segment)];
      }
      for (int r = 0; r < n; ++r) {
        const int seg = reduce[size_t(r)][size_t(k)].recv_segment;
        const uint32_t got = sent[size_t(ring_prev(r, n))];
        ASSERT_EQ(got & held[size_t(r)][size_t(seg)], 0u) << "a rank counted twice, n " << n;
        held[size_t(r)][size_t(seg)] |= got;
      }
    }
    const uint32_t everyone = (n == 32 ? 0u : (1u << n)) - 1u;
    for (int r = 0; r < n; ++r) EXPECT_EQ(held[size_t(r)][size_t(r)], everyone) << "n " << n;
    for (int k = 0; k + 1 < n; ++k) {
      std::vector<uint32_t> sent(static_cast<size_t>(n));
      for (int r = 0; r < n; ++r) {
        const RingStep& mine = gather[size_t(r)][size_t(k)];
        ASSERT_EQ(mine.send_segment, gather[size_t(ring_next(r, n))][size_t(k)].recv_segment);
        sent[size_t(r)] = held[size_t(r)][size_t(mine.send_segment)];
      }
      for (int r = 0; r < n; ++r)
        held[size_t(r)][size_t(gather[size_t(r)][size_t(k)].recv_segment)] =
            sent[size_t(ring_prev(r, n))];
    }
    for (int r = 0; r < n; ++r)
      for (int s = 0; s < n; ++s) EXPECT_EQ(held[size_t(r)][size_t(s)], everyone);
  }
}

TEST(LocalCommunicator, CollectivesOnOneRank) {
  LocalCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.world_size(), 1);
  Tensor t = Tensor::from_vector({1, 2, 3, 4}, Shape{4});
  WorkHandle w = c.all_reduce_async(t, ReduceOp::average);
  EXPECT_TRUE(w->done());
  w->wait();
  EXPECT_EQ(t.to_vector(), (std::vector<float>{1, 2, 3, 4}));
  Tensor out = Tensor::zeros(Shape{4});
  c.reduce_scatter(t, out, {4});
  EXPECT_EQ(out.to_vector(), t.to_vector());
  Tensor gathered = Tensor::zeros(Shape{4});
  c.all_gather(t, gathered, {4});
  EXPECT_EQ(gathered.to_vector(), t.to_vector());
  c.broadcast(t, 0);
  c.barrier();
  EXPECT_EQ(c.all_gather_bytes("abc"), (std::vector<std::string>{"abc"}));
  EXPECT_EQ(c.sum_f64(2.5), 2.5);
  EXPECT_EQ(c.split(3, 0)->world_size(), 1);

  expect_error([&] { c.reduce_scatter(t, out, {3}); }, {"reduce_scatter", "counts"});
  expect_error([&] { c.broadcast(t, 1); }, {"broadcast", "root 1"});
  expect_error([&] { c.all_reduce(Tensor::zeros(Shape{2}, DType::bf16)); },
               {"all_reduce: t", "expected f32"});
  expect_error(
      [&] {
        c.all_reduce(Tensor::zeros(Shape{2, 3}).transpose_view(0, 1));
      },
      {"all_reduce: t", "not contiguous"});
  // Consistency checks on one rank have nobody to disagree with.
  check_same_on_all_ranks(c, {{"a", "1"}}, "config");
}

// One rank has no peer: point-to-point transfers are errors that say so, naming call, peer and
// tensor; a batch fails before anything starts.
TEST(LocalCommunicator, PointToPointHasNoPeer) {
  LocalCommunicator c;
  Tensor t = Tensor::zeros(Shape{2, 3});
  expect_error([&] { c.send(t, 1); }, {"send(peer 1) of f32[2, 3]", "one rank", "no peer"});
  expect_error([&] { c.recv_async(t, 0); }, {"recv(peer 0) of f32[2, 3]", "no peer"});
  expect_error([&] { c.batch_send_recv({P2POp::recv(t, 0)}); },
               {"recv(peer 0)", "cannot receive from itself"});
  // An empty batch has nothing to do.
  EXPECT_TRUE(c.batch_send_recv_async({})->done());
}

// all_of: one handle for several, complete when each is; waiting rethrows a failure.
TEST(Work, AllOfWaitsForEachAndSpansTheirTimes) {
  class Failing final : public Work {
   public:
    void wait() override { throw Error("failed part"); }
    bool done() const override { return true; }
    double start_time() const override { return 1; }
    double end_time() const override { return 5; }
  };
  WorkHandle a = completed_work(), b = std::make_shared<Failing>();
  WorkHandle both = all_of({a, b});
  EXPECT_TRUE(both->done());
  EXPECT_EQ(both->start_time(), 1);
  EXPECT_EQ(both->end_time(), std::max(5.0, a->end_time()));
  expect_error([&] { both->wait(); }, {"failed part"});
  EXPECT_EQ(all_of({a}), a);
}

// What ZeRO asks of one rank: gathers in place, scatters into ranges of a larger buffer, empty
// ranges, outputs shaped differently from their inputs. Copies go through Tensor::copy_from on
// flat views (the same path a GPU buffer takes).
TEST(LocalCommunicator, CopiesBetweenRangesOfBuffers) {
  LocalCommunicator c;
  Tensor in = Tensor::from_vector({1, 2, 3, 4}, Shape{4});
  // Into elements [2, 6) of a larger buffer: its neighbours stay untouched.
  Tensor buf = Tensor::full(Shape{8}, -1.0);
  WorkHandle w = c.reduce_scatter_async(in, buf.slice_rows(2, 6), {4}, ReduceOp::average);
  EXPECT_TRUE(w->done());
  EXPECT_LE(w->start_time(), w->end_time());
  EXPECT_EQ(buf.to_vector(), (std::vector<float>{-1, -1, 1, 2, 3, 4, -1, -1}));
  // An output of another shape with as many elements takes them in order.
  Tensor square = Tensor::zeros(Shape{2, 2});
  c.all_gather(in, square, {4});
  EXPECT_EQ(square.to_vector(), in.to_vector());
  // In place: `in` is the whole of `out`.
  c.all_gather(buf.slice_rows(2, 6), buf.slice_rows(2, 6), {4});
  EXPECT_EQ(buf.to_vector(), (std::vector<float>{-1, -1, 1, 2, 3, 4, -1, -1}));
  // An empty range (a rank's shard outside a bucket) is allowed and copies nothing.
  c.reduce_scatter(in.slice_rows(4, 4), buf.slice_rows(0, 0), {0});
  c.all_gather(in.slice_rows(0, 0), buf.slice_rows(8, 8), {0});
  EXPECT_EQ(buf.to_vector(), (std::vector<float>{-1, -1, 1, 2, 3, 4, -1, -1}));

  expect_error([&] { c.all_gather(in, buf, {4}); }, {"all_gather", "f32[8]", "expected 4"});
  expect_error([&] { c.all_gather(in, buf.slice_rows(0, 4), {2}); },
               {"all_gather", "counts", "expected 1 entry of 4"});
  expect_error([&] { c.reduce_scatter(in, Tensor::zeros(Shape{4}, DType::bf16), {4}); },
               {"reduce_scatter: out", "expected f32"});
  expect_error([&] { c.all_gather(Tensor(), square, {4}); }, {"all_gather: in", "undefined"});
}

// ---- Buckets ----

TEST(Buckets, ReverseOrderTilingWholeParameters) {
  std::vector<ParamSegment> segs;
  const int64_t sizes[] = {100, 3000, 16, 5000, 7, 2000};
  int64_t off = 0;
  for (int64_t n : sizes) {
    segs.push_back({"p", Shape{n}, off, n});
    off = (off + n + 15) / 16 * 16;
  }
  const int64_t numel = off;
  // 4096 floats per bucket: a bucket closes once it holds at least that much.
  std::vector<Bucket> b = plan_buckets(segs, numel, 4096.0 * 4 / (1024 * 1024));
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].params, (std::vector<size_t>{5, 4, 3}));  // 2000 + 7 < 4096 <= + 5000
  EXPECT_EQ(b[1].params, (std::vector<size_t>{2, 1, 0}));  // the rest
  EXPECT_EQ(b[0].begin, segs[3].offset);
  // Bucket 0 holds the last parameter; buckets tile the buffer from the end backwards.
  EXPECT_EQ(b[0].params.front(), segs.size() - 1);
  EXPECT_EQ(b[0].end, numel);
  EXPECT_EQ(b.back().begin, 0);
  for (size_t i = 0; i + 1 < b.size(); ++i) {
    EXPECT_EQ(b[i + 1].end, b[i].begin);
    EXPECT_EQ(b[i].index, int(i));
  }
  // A small cap: one parameter per bucket, last parameter first.
  std::vector<Bucket> one = plan_buckets(segs, numel, 1e-6);
  ASSERT_EQ(one.size(), segs.size());
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_EQ(one[i].params, (std::vector<size_t>{segs.size() - 1 - i}));
  expect_error([&] { plan_buckets(segs, numel, 0); }, {"bucket_mb 0"});
}

namespace {

// Poses as rank 0 of 2 ranks whose other rank holds identical data: reductions and gathers leave
// this rank's values unchanged. Records every launch.
class RecordingComm final : public Communicator {
 public:
  struct Launch {
    std::string op;
    int64_t numel;
    double time;
  };
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  std::string backend() const override { return "recording"; }
  WorkHandle all_reduce_async(Tensor t, ReduceOp) override { return record("all_reduce", t); }
  WorkHandle reduce_scatter_async(Tensor in, Tensor, std::vector<int64_t>, ReduceOp) override {
    return record("reduce_scatter", in);
  }
  WorkHandle all_gather_async(Tensor, Tensor out, std::vector<int64_t>) override {
    return record("all_gather", out);
  }
  WorkHandle broadcast_async(Tensor t, int) override { return record("broadcast", t); }
  WorkHandle send_async(Tensor t, int) override { return record("send", t); }
  WorkHandle recv_async(Tensor t, int) override { return record("recv", t); }
  WorkHandle barrier_async() override { return local.barrier_async(); }
  std::vector<std::string> all_gather_bytes(const std::string& mine) override {
    return {mine, mine};
  }
  std::unique_ptr<Communicator> split(int, int) override { return nullptr; }

  std::vector<Launch> launches;

 private:
  WorkHandle record(const char* op, const Tensor& t) {
    launches.push_back({op, t.numel(), monotonic_seconds()});
    return local.barrier_async();
  }
  LocalCommunicator local;
};

nn::GPTConfig tiny_gpt() {
  nn::GPTConfig c;
  c.n_layer = 3, c.n_head = 2, c.n_embd = 32, c.context = 16, c.vocab_size = 64;
  return c;
}

Tensor random_ids(Generator& g, int64_t b, int64_t t, int64_t vocab) {
  std::vector<int32_t> v(size_t(b * t));
  for (auto& x : v) x = int32_t(g.next_u64() % uint64_t(vocab));
  return Tensor::from_ints(v, Shape{b, t});
}

}  // namespace

TEST(DDPHooks, BucketsStartDuringBackwardInReverseOrderOnlyOnTheLastMicroBatch) {
  Generator g(3);
  nn::GPT model(tiny_gpt(), g);
  RecordingComm comm;
  DataParallelOptions opt;
  opt.bucket_mb = 0.01;  // ~2600 floats: several buckets
  DDP ddp(model, comm, opt, nullptr);
  const auto& buckets = ddp.scheduler()->buckets();
  ASSERT_GE(buckets.size(), 4u);

  Tensor x = random_ids(g, 4, 8, 64), y = random_ids(g, 4, 8, 64);
  ddp.zero_grad();
  const int micro = 3;
  for (int i = 0; i < micro; ++i) {
    ddp.begin_micro_batch(i + 1 == micro);
    Tensor loss = model.loss(x.slice_rows(i, i + 1), y.slice_rows(i, i + 1));
    const size_t before = comm.launches.size();
    loss.backward();
    const double backward_end = monotonic_seconds();
    if (i + 1 < micro) {
      EXPECT_EQ(comm.launches.size(), before) << "micro-batch " << i << " communicated";
      continue;
    }
    // All buckets were started by the hooks, inside backward(), in bucket order (the last
    // parameters first), each the size of its bucket.
    ASSERT_EQ(comm.launches.size(), buckets.size());
    EXPECT_EQ(ddp.scheduler()->launched_by_hooks(), int(buckets.size()));
    for (size_t k = 0; k < buckets.size(); ++k) {
      EXPECT_EQ(comm.launches[k].op, "all_reduce");
      EXPECT_EQ(comm.launches[k].numel, buckets[k].numel()) << "bucket " << k;
      EXPECT_LT(comm.launches[k].time, backward_end);
    }
    // The first bucket went out well before the backward pass ended.
    EXPECT_LT(comm.launches.front().time, comm.launches.back().time);
  }
  ddp.finish_backward();
  EXPECT_EQ(comm.launches.size(), buckets.size());  // finish() had nothing left to start
}

// ---- Trace ----

TEST(Trace, OverlapAndChromeJson) {
  Tracer t(1);
  t.name_track(0, "training thread");
  t.add({"backward", SpanKind::compute, 0, 10.0, 12.0, 0});
  t.add({"wait", SpanKind::wait, 0, 12.0, 12.5, 0});
  t.add({"bucket 0", SpanKind::comm, 1, 11.0, 12.2, 0});
  t.add({"bucket 1", SpanKind::comm, 2, 11.5, 12.5, 0});  // overlaps bucket 0: counted once
  OverlapStats st = t.overlap();
  EXPECT_NEAR(st.comm_s, 1.5, 1e-12);
  EXPECT_NEAR(st.hidden_s, 1.0, 1e-12);
  EXPECT_NEAR(st.share(), 1.0 / 1.5, 1e-12);
  EXPECT_EQ(st.comm_spans, 2);
  EXPECT_EQ(st.started_in_backward, 2);
  t.add({"all-gather", SpanKind::comm, 3, 12.6, 12.7, 0});  // after backward, nothing to hide it
  EXPECT_EQ(t.overlap().started_in_backward, 2);
  EXPECT_NEAR(t.overlap().share(), 1.0 / 1.6, 1e-12);
  EXPECT_EQ(t.overlap(1).comm_s, 0);  // only step 0 recorded

  const fs::path p = tessera::testing::scratch_dir("dist_trace") / "trace.json";
  t.write(p.string());
  nlohmann::json doc = nlohmann::json::parse(std::ifstream(p));
  int spans = 0;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] != "X") continue;
    ++spans;
    EXPECT_EQ(e["pid"], 1);
    if (e["name"] == "bucket 1") {
      EXPECT_NEAR(e["ts"].get<double>(), 1.5e6, 1e-3);  // microseconds from the first span
      EXPECT_NEAR(e["dur"].get<double>(), 1.0e6, 1e-3);
      EXPECT_EQ(e["cat"], "comm");
    }
  }
  EXPECT_EQ(spans, 5);
}

TEST(Trace, LongRunsKeepStatisticsButOnlyTheFirstStepsSpans) {
  Tracer t(0, true, /*keep_steps=*/2);
  for (int64_t step = 0; step < 6; ++step) {
    t.set_step(step);
    const double s0 = 10.0 * double(step);
    t.add({"backward", SpanKind::compute, 0, s0, s0 + 2, step});
    t.add({"bucket 0", SpanKind::comm, 1, s0 + 1, s0 + 3, step});  // half hidden
  }
  t.set_step(6);
  std::vector<TraceSpan> kept = t.spans();
  EXPECT_EQ(kept.size(), 4u);  // steps 0 and 1 only
  for (const TraceSpan& s : kept) EXPECT_LT(s.step, 2);
  const OverlapStats all = t.overlap(), late = t.overlap(3);
  EXPECT_NEAR(all.comm_s, 12.0, 1e-9);
  EXPECT_NEAR(all.hidden_s, 6.0, 1e-9);
  EXPECT_EQ(all.comm_spans, 6);
  EXPECT_EQ(all.started_in_backward, 6);
  EXPECT_NEAR(late.comm_s, 6.0, 1e-9);
}

// ---- Sharded optimizer ----

namespace {

// Runs `steps` updates of the optim/ optimizer over a FlatParameters and of ShardedOptimizer
// over `world` shards of the same buffers; expects bit-identical parameters.
void expect_sharded_matches(const ShardedOptimizerOptions& so, int world) {
  Generator g(9);
  std::vector<Tensor> params = {
      tessera::testing::randn_param(Shape{40, 30}, g), tessera::testing::randn_param(Shape{30}, g),
      tessera::testing::randn_param(Shape{7, 50}, g), tessera::testing::randn_param(Shape{3}, g)};
  FlatParameters flat(params);
  std::unique_ptr<Optimizer> ref = make_flat_optimizer(flat, so);
  const int64_t n = flat.numel();
  std::vector<float> values(flat.value_data(), flat.value_data() + n);
  std::vector<bool> decay;
  for (const Tensor& p : params) decay.push_back(decay_if_matrix(p));
  ShardLayout shards(n, world, 16);
  std::vector<std::unique_ptr<ShardedOptimizer>> sharded;
  for (int r = 0; r < world; ++r)
    sharded.push_back(std::make_unique<ShardedOptimizer>(flat.segments(), decay, n, shards.begin(r),
                                                         shards.end(r), so));
  for (int step = 0; step < 5; ++step) {
    Tensor grads = Tensor::randn(Shape{n}, g);
    std::vector<float> gv = grads.to_vector();
    std::vector<float> padded(size_t(n), 0.f);  // padding keeps a zero gradient
    for (const ParamSegment& s : flat.segments())
      for (int64_t i = s.offset; i < s.offset + s.numel; ++i) padded[size_t(i)] = gv[size_t(i)];
    std::copy(padded.begin(), padded.end(), flat.grad_data());
    ref->step(0.01f);
    for (int r = 0; r < world; ++r)
      sharded[size_t(r)]->step(0.01f, values.data() + shards.begin(r),
                               padded.data() + shards.begin(r));
  }
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(values[size_t(i)], flat.value_data()[i]) << so.name << " element " << i;
  int64_t state = 0;
  for (const auto& s : sharded) state += int64_t(s->state_bytes());
  EXPECT_EQ(state, (so.name == "adamw" ? 2 : 1) * n * 4);
}

}  // namespace

TEST(ShardedOptimizer, AdamWShardsMatchTheFlatOptimizerBitwise) {
  ShardedOptimizerOptions so;
  so.adamw.weight_decay = 0.1f;
  for (int world : {1, 2, 3}) expect_sharded_matches(so, world);
}

TEST(ShardedOptimizer, SGDShardsMatchTheFlatOptimizerBitwise) {
  ShardedOptimizerOptions so;
  so.name = "sgd";
  so.sgd.momentum = 0.9f;
  so.sgd.weight_decay = 0.01f;
  for (int world : {1, 2, 4}) expect_sharded_matches(so, world);
}

// ---- Every ZeRO stage on one rank trains exactly like plain training ----

TEST(DataParallel, EveryZeroStageOnOneRankMatchesPlainTrainingBitwise) {
  const fs::path dir = tessera::testing::scratch_dir("dist_zero1rank");
  train::Config cfg = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 8);
  cfg.train.micro_batches = 2;
  std::vector<std::vector<double>> losses;
  std::vector<MemoryReport> mem;
  for (int stage = 0; stage <= 3; ++stage) {
    cfg.parallel.zero_stage = stage;
    train::RunOptions opt;
    opt.out_dir = (dir / fmt::format("z{}", stage)).string();
    opt.plot = false;
    opt.comm = std::make_shared<LocalCommunicator>();
    opt.console = std::fopen("/dev/null", "w");
    train::RunSummary s = train::run_training(cfg, opt);
    std::fclose(opt.console);
    losses.push_back(s.losses);
    mem.push_back(s.memory);
  }
  ASSERT_EQ(losses[0].size(), 8u);
  EXPECT_LT(losses[0].back(), losses[0].front());
  for (int stage = 1; stage <= 3; ++stage)
    for (size_t i = 0; i < losses[0].size(); ++i)
      EXPECT_EQ(losses[size_t(stage)][i], losses[0][i]) << "stage " << stage << " step " << i;
  // One rank holds everything whatever the stage: AdamW's two moments, a full gradient.
  for (int stage = 0; stage <= 3; ++stage) {
    EXPECT_NEAR(double(mem[size_t(stage)].optimizer_bytes), double(mem[0].optimizer_bytes),
                0.01 * double(mem[0].optimizer_bytes));
    EXPECT_GT(mem[size_t(stage)].grad_bytes, 0);
    EXPECT_GT(mem[size_t(stage)].param_bytes, 0);
  }
  EXPECT_NEAR(double(mem[0].optimizer_bytes), 2.0 * double(mem[0].param_bytes),
              0.01 * double(mem[0].param_bytes));
}

// ZeRO-3 hands the parameters out for saving one unit at a time (DataParallel::visit_present):
// each parameter once, with the values gather_all gives, while no more than the unit visited and
// the next one (prefetched) are held beyond the shard, never the whole model; afterwards
// nothing more is held.
TEST(DataParallel, ZeroThreeVisitsTheParametersUnitByUnit) {
  const fs::path dir = tessera::testing::scratch_dir("dist_visit");
  train::Config cfg = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 4);
  cfg.model.n_layer = 6;
  Generator g(3);
  std::unique_ptr<nn::Decoder> model = train::make_decoder(cfg, g);
  const nn::ParameterUnits units = model->parameter_units();
  std::vector<int64_t> unit_bytes;
  for (const std::vector<Tensor>& u : units.units) {
    unit_bytes.push_back(0);
    for (const Tensor& t : u) unit_bytes.back() += 4 * t.numel();
  }
  int64_t whole = 0, two_units = 0;
  for (size_t u = 0; u < unit_bytes.size(); ++u) {
    whole += unit_bytes[u];
    if (u + 1 < unit_bytes.size())
      two_units = std::max(two_units, unit_bytes[u] + unit_bytes[u + 1]);
  }
  ASSERT_GE(unit_bytes.size(), 8u);  // the embeddings, six blocks, the head

  LocalCommunicator comm;
  DataParallelOptions o;
  o.zero_stage = 3;
  std::unique_ptr<DataParallel> dp = make_data_parallel(*model, comm, o, nullptr, units);
  const std::vector<Tensor> params = model->parameters();
  std::vector<Tensor> expected;
  dp->gather_all();
  for (const Tensor& p : params) expected.push_back(p.clone());
  dp->release_all();

  Allocator& alloc = allocator_for(Device::cpu());
  const int64_t before = int64_t(alloc.stats().in_use);
  int64_t most = 0;
  std::vector<int> visits(params.size());
  dp->visit_present(params.size(), [&](size_t i) {
    ++visits[i];
    most = std::max(most, int64_t(alloc.stats().in_use) - before);
    EXPECT_EQ(params[i].to_vector(), expected[i].to_vector()) << params[i].name();
  });
  EXPECT_EQ(visits, std::vector<int>(params.size(), 1));
  EXPECT_LE(double(most), 1.15 * double(two_units)) << "size classes round up by <= 12.5%";
  EXPECT_LT(most, whole / 2);
  EXPECT_EQ(int64_t(alloc.stats().in_use), before);

  // host_parameters: the same values by name, copies that outlive the units; none where not kept.
  const nn::NamedTensors host = host_parameters(*dp, *model, true);
  ASSERT_EQ(host.size(), params.size());
  for (size_t i = 0; i < host.size(); ++i) {
    EXPECT_EQ(host[i].first, model->named_parameters()[i].first);
    EXPECT_EQ(host[i].second.to_vector(), expected[i].to_vector()) << host[i].first;
  }
  EXPECT_TRUE(host_parameters(*dp, *model, false).empty());
}

TEST(DataParallel, BatchMustSplitEvenlyOverRanksAndMicroBatches) {
  const fs::path dir = tessera::testing::scratch_dir("dist_split");
  train::Config cfg = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 3);
  cfg.train.batch_size = 6;
  cfg.train.micro_batches = 1;
  train::RunOptions opt;
  opt.out_dir = (dir / "run").string();
  opt.plot = false;
  RecordingComm comm2;          // poses as 2 ranks: 6 rows split 3 + 3, fine
  cfg.train.micro_batches = 2;  // 3 rows into 2 micro-batches: not fine
  opt.comm = std::shared_ptr<Communicator>(&comm2, [](Communicator*) {});
  expect_error([&] { train::run_training(cfg, opt); },
               {"train.batch_size = 6", "2 data-parallel ranks", "train.micro_batches = 2"});
}
