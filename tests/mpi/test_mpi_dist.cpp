// Distributed training under mpirun (CTest runs it with -np 4 and -np 2; see CMakeLists.txt):
// the MPI collectives, and training equivalence. For 20 steps of a small f32 GPT the losses of
//   1 rank with global batch B, 1 rank with B in 4 micro-batches, 2 ranks and 4 ranks with B
//   split among them, and ZeRO stages 1, 2, 3 on 2 and 4 ranks
// agree to 1e-5 relative; after every step all ranks of a run hold bit-identical parameters;
// the state bytes each rank allocates fall as 1/N with the ZeRO stage; ranks with different
// configs stop with an error naming the key.
//
// Every rank runs every test. Tests avoid ASSERT between collectives (a rank that returned
// early would leave the others waiting): they run all collectives first, then check.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "core/allocator.h"
#include "core/file_io.h"
#include "dist/consistency.h"
#include "dist/local_comm.h"
#include "dist/mpi_comm.h"
#include "gradcheck.h"
#include "mpi/mpi_test_main.h"
#include "mpi/tiny_job.h"
#include "scratch.h"
#include "train/trainer.h"

using namespace tessera;
using namespace tessera::dist;
namespace fs = std::filesystem;

namespace {

using tessera::testing::world;
using tessera::testing::world_comm;

using tessera::testing::job_scratch_dir;

// ---- Collectives ----

TEST(Collectives, AllReduceSumAndAverage) {
  const int r = world().rank(), n = world().world_size();
  Tensor t = Tensor::from_vector({float(r), 1.f, float(r * r)}, Shape{3});
  world().all_reduce(t, ReduceOp::sum);
  Tensor a = Tensor::from_vector({float(2 * r), 4.f}, Shape{2});
  world().all_reduce(a, ReduceOp::average);
  float sum_r = 0, sum_r2 = 0;
  for (int i = 0; i < n; ++i) sum_r += float(i), sum_r2 += float(i * i);
  EXPECT_EQ(t.to_vector(), (std::vector<float>{sum_r, float(n), sum_r2}));
  EXPECT_FLOAT_EQ(a.to_vector()[0], 2 * sum_r / float(n));
  EXPECT_FLOAT_EQ(a.to_vector()[1], 4.f);
}

TEST(Collectives, AsyncHandlesCompleteInAnyWaitOrder) {
  const int n = world().world_size();
  std::vector<Tensor> ts;
  std::vector<WorkHandle> ws;
  for (int k = 0; k < 5; ++k) {
    ts.push_back(Tensor::full(Shape{1000 * (k + 1)}, double(k + 1)));
    ws.push_back(world().all_reduce_async(ts.back(), ReduceOp::sum));
  }
  for (int k = 4; k >= 0; --k) ws[size_t(k)]->wait();
  for (int k = 0; k < 5; ++k) {
    EXPECT_TRUE(ws[size_t(k)]->done());
    EXPECT_GE(ws[size_t(k)]->end_time(), ws[size_t(k)]->start_time());
    std::vector<float> v = ts[size_t(k)].to_vector();
    EXPECT_EQ(v.front(), float(n * (k + 1)));
    EXPECT_EQ(v.back(), float(n * (k + 1)));
  }
}

TEST(Collectives, ReduceScatterWithUnevenAndEmptyShares) {
  const int r = world().rank(), n = world().world_size();
  // Rank i's share is i + 1 elements, except the last rank, which gets none.
  std::vector<int64_t> counts;
  for (int i = 0; i < n; ++i) counts.push_back(i + 1 == n ? 0 : i + 1);
  int64_t total = 0, offset = 0;
  for (int i = 0; i < n; ++i) {
    if (i < r) offset += counts[size_t(i)];
    total += counts[size_t(i)];
  }
  std::vector<float> in(static_cast<size_t>(total));
  for (int64_t j = 0; j < total; ++j) in[size_t(j)] = float(j * 10 + r);
  Tensor out = Tensor::zeros(Shape{counts[size_t(r)]});
  world().reduce_scatter(Tensor::from_vector(in, Shape{total}), out, counts, ReduceOp::sum);
  const float rank_sum = float(n * (n - 1) / 2);
  std::vector<float> got = out.to_vector();
  for (int64_t j = 0; j < counts[size_t(r)]; ++j)
    EXPECT_EQ(got[size_t(j)], float((offset + j) * 10 * n) + rank_sum) << "element " << j;
}

// The description says whether collectives progress while the ranks compute, and why.
TEST(Collectives, DescriptionSaysWhetherCollectivesOverlapComputation) {
  const std::string d = world().describe();
  const char* forced = std::getenv("TESSERA_TEST_MPI_OVERLAP");
  if (forced && std::string(forced) == "on") {
    EXPECT_NE(d.find("collectives progress while computing: yes (MpiOptions::overlap)"),
              std::string::npos)
        << d;
  } else if (forced && std::string(forced) == "off") {
    EXPECT_NE(d.find("collectives progress while computing: no (MpiOptions::overlap)"),
              std::string::npos)
        << d;
  } else {
    EXPECT_NE(d.find(" compute thread"), std::string::npos) << d;  // the cores and threads
  }
}

// Collectives of MpiOptions::ring_min_bytes (256 KiB) and more run as Tessera's ring over
// point-to-point transfers: sums and averages of integer-valued floats (exact whatever the
// order), uneven and empty shares, several rings in flight at once waited in reverse order, an
// all-gather in place and out of place.
TEST(Collectives, LargeCollectivesRunAsARing) {
  const int r = world().rank(), n = world().world_size();
  const int64_t big = (int64_t(1) << 18) + 7;  // 1 MiB + 28 bytes: segments of unequal size
  float rank_sum = 0;
  for (int i = 0; i < n; ++i) rank_sum += float(i);
  std::vector<Tensor> sums;
  std::vector<WorkHandle> ws;
  for (int k = 0; k < 3; ++k) {
    std::vector<float> v(static_cast<size_t>(big));
    for (int64_t j = 0; j < big; ++j) v[size_t(j)] = float((j % 1000) * (k + 1) + r);
    sums.push_back(Tensor::from_vector(v, Shape{big}));
    ws.push_back(world().all_reduce_async(sums.back(), ReduceOp::sum));
  }
  Tensor avg = Tensor::full(Shape{big}, double(2 * r));
  ws.push_back(world().all_reduce_async(avg, ReduceOp::average));
  for (auto it = ws.rbegin(); it != ws.rend(); ++it) (*it)->wait();
  // Reduce-scatter: rank i's share is (i + 1) * 40000 elements, the last rank's none.
  std::vector<int64_t> counts;
  int64_t total = 0, offset = 0;
  for (int i = 0; i < n; ++i) {
    counts.push_back(i + 1 == n ? 0 : (i + 1) * 40000);
    if (i < r) offset += counts.back();
    total += counts.back();
  }
  std::vector<float> in(static_cast<size_t>(total));
  for (int64_t j = 0; j < total; ++j) in[size_t(j)] = float(j % 4096 + r);
  Tensor in_t = Tensor::from_vector(in, Shape{total});
  Tensor out = Tensor::zeros(Shape{counts[size_t(r)]});
  world().reduce_scatter(in_t, out, counts, ReduceOp::average);
  // All-gather of the same shares: rank i contributes (i + 1) * 40000 copies of 7 i + 1.
  Tensor share = Tensor::full(Shape{counts[size_t(r)]}, double(7 * r + 1));
  Tensor gathered = Tensor::zeros(Shape{total});
  world().all_gather(share, gathered, counts);
  Tensor in_place = Tensor::full(Shape{total}, -1.0);
  Tensor my_slot = in_place.slice_rows(offset, offset + counts[size_t(r)]);
  my_slot.fill_(double(7 * r + 1));
  world().all_gather(my_slot, in_place, counts);

  for (int k = 0; k < 3; ++k) {
    std::vector<float> got = sums[size_t(k)].to_vector();
    int64_t wrong = 0;
    for (int64_t j = 0; j < big; ++j)
      wrong += got[size_t(j)] != float((j % 1000) * (k + 1) * n) + rank_sum;
    EXPECT_EQ(wrong, 0) << "all-reduce " << k;
  }
  std::vector<float> a = avg.to_vector();
  EXPECT_FLOAT_EQ(a.front(), 2 * rank_sum / float(n));
  EXPECT_FLOAT_EQ(a.back(), 2 * rank_sum / float(n));
  EXPECT_EQ(in_t.to_vector(), in) << "reduce-scatter changed its input";
  std::vector<float> got = out.to_vector();
  int64_t wrong = 0;
  for (int64_t j = 0; j < counts[size_t(r)]; ++j)
    wrong += got[size_t(j)] != (float((offset + j) % 4096 * n) + rank_sum) * (1.f / float(n));
  EXPECT_EQ(wrong, 0);
  std::vector<float> expected;
  for (int i = 0; i < n; ++i)
    expected.resize(expected.size() + size_t(counts[size_t(i)]), float(7 * i + 1));
  EXPECT_EQ(gathered.to_vector(), expected);
  EXPECT_EQ(in_place.to_vector(), expected);
}

TEST(Collectives, AllGatherInPlaceAndOutOfPlace) {
  const int r = world().rank(), n = world().world_size();
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (int i = 0; i < n; ++i) counts.push_back(i + 2), total += i + 2;
  int64_t mine = 0;
  for (int i = 0; i < r; ++i) mine += counts[size_t(i)];
  // Out of place.
  Tensor in = Tensor::full(Shape{counts[size_t(r)]}, double(r + 1));
  Tensor out = Tensor::zeros(Shape{total});
  world().all_gather(in, out, counts);
  // In place: this rank's part already sits at its offset in `buf`.
  Tensor buf = Tensor::full(Shape{total}, -1.0);
  buf.slice_rows(mine, mine + counts[size_t(r)]).fill_(double(100 + r));
  world().all_gather(buf.slice_rows(mine, mine + counts[size_t(r)]), buf, counts);
  std::vector<float> o = out.to_vector(), b = buf.to_vector();
  int64_t j = 0;
  for (int i = 0; i < n; ++i)
    for (int64_t k = 0; k < counts[size_t(i)]; ++k, ++j) {
      EXPECT_EQ(o[size_t(j)], float(i + 1));
      EXPECT_EQ(b[size_t(j)], float(100 + i));
    }
}

TEST(Collectives, BroadcastBytesAndSplit) {
  const int r = world().rank(), n = world().world_size();
  Tensor t = Tensor::full(Shape{7}, double(r == n - 1 ? 42 : r));
  world().broadcast(t, n - 1);
  std::vector<std::string> all = world().all_gather_bytes(std::string(size_t(r), 'x'));
  const std::vector<double> sums = world().all_gather_f64(0.5 * r);
  std::unique_ptr<Communicator> half = world().split(r % 2, r);
  Tensor h = Tensor::full(Shape{1}, double(r));
  half->all_reduce(h, ReduceOp::sum);
  world().barrier();

  EXPECT_EQ(t.to_vector(), std::vector<float>(7, 42.f));
  for (int i = 0; i < n; ++i) EXPECT_EQ(all[size_t(i)], std::string(size_t(i), 'x'));
  for (int i = 0; i < n; ++i) EXPECT_EQ(sums[size_t(i)], 0.5 * i);
  EXPECT_EQ(half->world_size(), (n + 1 - r % 2) / 2);
  EXPECT_EQ(half->rank(), r / 2);
  float expect = 0;
  for (int i = r % 2; i < n; i += 2) expect += float(i);
  EXPECT_EQ(h.to_vector()[0], expect);
}

TEST(Collectives, ErrorsNameTheCall) {
  const int n = world().world_size();
  Tensor t = Tensor::zeros(Shape{4});
  tessera::testing::expect_error(
      [&] {
        world().reduce_scatter(t, Tensor::zeros(Shape{1}), std::vector<int64_t>(size_t(n + 1), 1));
      },
      {"reduce_scatter", "counts"});
  tessera::testing::expect_error([&] { world().broadcast(t, n); }, {"broadcast", "root"});
}

// ---- Start-up consistency ----

TEST(Consistency, DifferingKeyIsNamedOnEveryRank) {
  const int r = world().rank(), n = world().world_size();
  Entries same = {{"train.batch_size", "16"}, {"model.n_embd", "64"}};
  check_same_on_all_ranks(world(), same, "config");  // no error
  Entries differ = same;
  if (r == n - 1) differ[1].second = "32";
  tessera::testing::expect_error(
      [&] { check_same_on_all_ranks(world(), differ, "config"); },
      {"disagree on model.n_embd", "64 on rank 0", fmt::format("32 on rank {}", n - 1)});
  Entries shapes = {{"model parameter h.0.attn.c_attn.weight", r == 1 ? "[48, 16]" : "[96, 32]"}};
  tessera::testing::expect_error([&] { check_same_on_all_ranks(world(), shapes, "config"); },
                                 {"model parameter h.0.attn.c_attn.weight", "[48, 16] on rank 1"});
}

TEST(Consistency, RanksWithDifferentConfigsStopAtStartUp) {
  const int r = world().rank();
  const fs::path dir = job_scratch_dir("mpi_mismatch");
  if (r == 0) tessera::testing::write_tiny_corpus(dir);
  world().barrier();
  train::Config cfg = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 4);
  if (r == 1) cfg.optim.lr = 1e-3;
  train::RunOptions opt;
  opt.out_dir = (dir / "run").string();
  opt.plot = false;
  opt.comm = world_comm();
  tessera::testing::expect_error([&] { train::run_training(cfg, opt); },
                                 {"disagree on optim.lr", "0.001 on rank 1"});
}

// ---- Training equivalence ----

struct RunResult {
  std::vector<double> losses;
  bool params_identical = true;  // checksums equal on every rank after every step
  int64_t checksum_steps = 0;
  MemoryReport memory;
  int64_t live_bytes = 0;  // allocator bytes in use after step 10, beyond those before the run
  OverlapStats overlap;
  std::optional<uint64_t> samples_digest;  // sample accounting's, over the whole run
  double val_loss = 0;                     // the last step's evaluation
  int64_t peak_bytes = 0;  // the allocator's peak in steps 2 on, beyond the bytes before the run
};

RunResult train_on(std::shared_ptr<Communicator> comm, train::Config cfg, const std::string& name,
                   const fs::path& dir, bool evaluate = true) {
  RunResult res;
  train::RunOptions opt;
  opt.evaluate = evaluate;
  opt.out_dir = (dir / fmt::format("{}_rank{}", name, world().rank())).string();
  opt.plot = false;
  opt.comm = comm;
  FILE* quiet = std::fopen("/dev/null", "w");
  opt.console = quiet;
  const int64_t before = int64_t(allocator_for(Device::cpu()).stats().in_use);
  Communicator* c = comm.get();
  Allocator& cpu = allocator_for(Device::cpu());
  opt.on_step = [&](int64_t step, double, DataParallel& dp) {
    // The peak of the steps after the first (set-up's copies aside), each from the end of the
    // previous one's checksum (ZeRO-3's gathers the whole model) to here.
    if (step >= 2)
      res.peak_bytes = std::max(res.peak_bytes, int64_t(cpu.stats().peak_in_use) - before);
    const uint64_t mine = dp.parameter_checksum();
    const std::vector<std::string> all = c->all_gather_bytes(std::to_string(mine));
    for (const std::string& s : all) res.params_identical &= s == all[0];
    ++res.checksum_steps;
    if (step == 10) res.live_bytes = int64_t(cpu.stats().in_use) - before;
    cpu.reset_peak();
  };
  train::RunSummary s = train::run_training(cfg, opt);
  std::fclose(quiet);
  res.losses = s.losses;
  res.memory = s.memory;
  res.overlap = s.overlap;
  res.samples_digest = s.samples_digest;
  if (s.last_eval.is_object()) res.val_loss = s.last_eval.value("val_loss", 0.0);
  return res;
}

double max_relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = a.size() == b.size() ? 0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(b[i]));
  return worst;
}

// Allocator sizes are rounded up to size classes (<= 12.5%); shards to 16 elements.
void expect_share(int64_t part, int64_t whole, int n, const std::string& what) {
  const double ratio = double(part) / double(whole) * n;
  EXPECT_GT(ratio, 0.85) << what << ": " << part << " bytes vs " << whole << " on one rank";
  EXPECT_LT(ratio, 1.15) << what << ": " << part << " bytes vs " << whole << " on one rank";
}

// ---- Slow ranks (train/rank_timing.h) ----

TEST(SlowRanks, ARankThatComputesSlowerIsNamedInTheMetricsAndAWarning) {
  const int r = world().rank(), n = world().world_size();
  const fs::path dir = job_scratch_dir("mpi_slow_rank");
  if (r == 0) tessera::testing::write_tiny_corpus(dir);
  world().barrier();
  train::Config cfg = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 12);
  cfg.train.log_every = 3;  // 4 reports; the warning needs 3 in a row
  train::RunOptions opt;
  opt.out_dir = (dir / "run").string();
  opt.plot = false;
  opt.comm = world_comm();
  const fs::path console = dir / fmt::format("console_rank{}.txt", r);
  opt.console = std::fopen(console.c_str(), "w");
  const int slow = n - 1;
  opt.before_gradient_sync = [&](int64_t) {
    if (r == slow) std::this_thread::sleep_for(std::chrono::milliseconds(150));
  };
  const train::RunSummary s = train::run_training(cfg, opt);
  std::fclose(opt.console);
  // Every rank took part in the same reports: all name the slow rank, and only it.
  EXPECT_EQ(s.slow_ranks, std::set<int>{slow});
  if (r != 0) return;
  std::ifstream m(dir / "run" / "metrics.jsonl");
  int records = 0;
  for (std::string line; std::getline(m, line); ++records) {
    const nlohmann::json j = nlohmann::json::parse(line);
    const auto p50 = j["rank_compute_ms_p50"].get<std::vector<double>>();
    const auto p95 = j["rank_compute_ms_p95"].get<std::vector<double>>();
    ASSERT_EQ(p50.size(), size_t(n)) << line;
    ASSERT_EQ(p95.size(), size_t(n)) << line;
    EXPECT_GE(p50[size_t(slow)], 150.0) << line;
    for (int q = 0; q < n; ++q) EXPECT_GE(p95[size_t(q)], p50[size_t(q)]) << line;
  }
  EXPECT_EQ(records, 4);
  const std::string text = tessera::read_small_file(console.string(), 1 << 20);
  EXPECT_NE(text.find(fmt::format("warning: rank {} is slow: its median compute time", slow)),
            std::string::npos)
      << text;
}

TEST(Equivalence, OneTwoFourRanksMicroBatchesAndZeroStagesAgree) {
  const int r = world().rank(), n = world().world_size();
  if (n != 4) GTEST_SKIP() << "needs 4 ranks (mpirun -np 4), have " << n;
  const fs::path dir = job_scratch_dir("mpi_equivalence");
  if (r == 0) tessera::testing::write_tiny_corpus(dir);
  world().barrier();
  const train::Config base = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  auto local = std::make_shared<LocalCommunicator>();
  std::shared_ptr<Communicator> pair = world().split(r / 2, r);  // ranks {0,1} and {2,3}

  std::map<std::string, RunResult> runs;
  runs["1 rank"] = train_on(local, base, "one", dir);
  train::Config micro = base;
  micro.train.micro_batches = 4;
  runs["1 rank, 4 micro-batches"] = train_on(local, micro, "micro", dir);
  runs["2 ranks"] = train_on(pair, base, "two", dir);
  runs["4 ranks"] = train_on(world_comm(), base, "four", dir);
  std::map<int, RunResult> zero_one;  // ZeRO stage k on one rank: the full-size reference
  for (int stage = 1; stage <= 3; ++stage) {
    train::Config z = base;
    z.parallel.zero_stage = stage;
    zero_one[stage] = train_on(local, z, fmt::format("z{}_one", stage), dir);
    runs[fmt::format("ZeRO-{}, 2 ranks", stage)] =
        train_on(pair, z, fmt::format("z{}_two", stage), dir);
    runs[fmt::format("ZeRO-{}, 4 ranks", stage)] =
        train_on(world_comm(), z, fmt::format("z{}_four", stage), dir);
  }

  const RunResult& ref = runs["1 rank"];
  ASSERT_EQ(ref.losses.size(), 20u);
  EXPECT_LT(ref.losses.back(), ref.losses.front() - 0.5) << "the job should learn";
  for (const auto& [name, run] : runs) {
    EXPECT_LE(max_relative_difference(run.losses, ref.losses), 1e-5) << name;
    EXPECT_TRUE(run.params_identical) << name << ": ranks' parameters differ after a step";
    EXPECT_EQ(run.checksum_steps, 20) << name;
    // The same samples, whatever the ranks and micro-batches (train/sample_account.h).
    EXPECT_EQ(run.samples_digest, ref.samples_digest) << name;
    // The same evaluation: 2 batches over 1, 2 or 4 ranks; under ZeRO-3 the forward gathers
    // stage by stage, the ranks without a batch running a spare one in lockstep.
    EXPECT_LE(std::abs(run.val_loss - ref.val_loss) / ref.val_loss, 1e-5) << name;
  }
  EXPECT_GT(ref.val_loss, 0);
  ASSERT_TRUE(ref.samples_digest.has_value());
  // ZeRO against plain DDP on the same ranks.
  for (int stage = 1; stage <= 3; ++stage)
    EXPECT_LE(max_relative_difference(runs[fmt::format("ZeRO-{}, 4 ranks", stage)].losses,
                                      runs["4 ranks"].losses),
              1e-5)
        << "stage " << stage;

  // Communication overlapped the backward pass in the 4-rank DDP run.
  EXPECT_GT(runs["4 ranks"].overlap.comm_s, 0);
  EXPECT_GT(runs["4 ranks"].overlap.hidden_s, 0);
  EXPECT_GT(runs["4 ranks"].overlap.started_in_backward, 0);

  // Memory, as allocated: sharded state falls as 1/N; the rest stays whole.
  const MemoryReport ddp = ref.memory;
  for (int world_n : {2, 4}) {
    const std::string sfx = world_n == 2 ? ", 2 ranks" : ", 4 ranks";
    const MemoryReport z1 = runs["ZeRO-1" + sfx].memory, z2 = runs["ZeRO-2" + sfx].memory,
                       z3 = runs["ZeRO-3" + sfx].memory;
    const MemoryReport one1 = zero_one[1].memory, one2 = zero_one[2].memory,
                       one3 = zero_one[3].memory;
    expect_share(z1.optimizer_bytes, one1.optimizer_bytes, world_n, "ZeRO-1 optimizer" + sfx);
    expect_share(z2.optimizer_bytes, one2.optimizer_bytes, world_n, "ZeRO-2 optimizer" + sfx);
    expect_share(z3.optimizer_bytes, one3.optimizer_bytes, world_n, "ZeRO-3 optimizer" + sfx);
    expect_share(z2.grad_bytes, one2.grad_bytes, world_n, "ZeRO-2 gradients" + sfx);
    expect_share(z3.grad_bytes, one3.grad_bytes, world_n, "ZeRO-3 gradients" + sfx);
    expect_share(z3.param_bytes, one3.param_bytes, world_n, "ZeRO-3 parameters" + sfx);
    // Not sharded: ZeRO-1 keeps whole gradients, ZeRO-1/2 whole parameters.
    EXPECT_GE(z1.grad_bytes, ddp.grad_bytes) << sfx;
    EXPECT_GE(z1.param_bytes, ddp.param_bytes) << sfx;
    EXPECT_GE(z2.param_bytes, ddp.param_bytes) << sfx;
    // And what stays allocated between steps falls with each stage: ZeRO-2 drops ZeRO-1's whole
    // gradient buffer, ZeRO-3 the parameters other ranks own.
    if (std::getenv("TESSERA_TEST_VERBOSE"))
      std::fprintf(stderr, "rank %d%s: live %ld %ld %ld; z3 params %ld grads %ld opt %ld\n", r,
                   sfx.c_str(), long(runs["ZeRO-1" + sfx].live_bytes),
                   long(runs["ZeRO-2" + sfx].live_bytes), long(runs["ZeRO-3" + sfx].live_bytes),
                   long(z3.param_bytes), long(z3.grad_bytes), long(z3.optimizer_bytes));
    const int64_t live1 = runs["ZeRO-1" + sfx].live_bytes, live2 = runs["ZeRO-2" + sfx].live_bytes,
                  live3 = runs["ZeRO-3" + sfx].live_bytes;
    EXPECT_NEAR(double(live1 - live2), double(ddp.grad_bytes), 0.15 * double(ddp.grad_bytes))
        << sfx;
    const double others = double(ddp.param_bytes) * (1 - 1.0 / world_n);
    EXPECT_NEAR(double(live2 - live3), others, 0.15 * others) << sfx;
  }
}

// ZeRO-2 and -3 reduce each micro-batch's gradients into the shard: with 4 micro-batches on 2
// ranks they train as one rank does, and ZeRO-2's peak leaves out the whole gradients that
// ZeRO-1 keeps across the micro-batches.
TEST(Equivalence, ZeroTwoAndThreeKeepNoWholeGradientsAcrossMicroBatches) {
  const int r = world().rank(), n = world().world_size();
  if (n != 4) GTEST_SKIP() << "needs 4 ranks (mpirun -np 4), have " << n;
  const fs::path dir = job_scratch_dir("mpi_zero_micro");
  if (r == 0) tessera::testing::write_tiny_corpus(dir);
  world().barrier();
  train::Config base = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 6);
  base.train.micro_batches = 4;
  // 0.83M parameters, the largest 65,536: the gradients outweigh a row's activations and a
  // bucket in flight, as in a large model.
  base.model.n_layer = 4;
  base.model.n_embd = 128;
  // Buckets of about 26,000 floats, a small part of the model, as 25 MiB ones are of a large one
  // (a single bucket holds every gradient until it is sent, and its send buffer once more).
  base.parallel.bucket_mb = 0.1;
  const RunResult ref = train_on(std::make_shared<LocalCommunicator>(), base, "one", dir);
  std::shared_ptr<Communicator> pair = world().split(r / 2, r);
  std::map<int, RunResult> z;
  for (int stage = 1; stage <= 3; ++stage) {
    train::Config c = base;
    c.parallel.zero_stage = stage;
    z[stage] = train_on(pair, c, fmt::format("z{}", stage), dir, /*evaluate=*/false);
    EXPECT_LE(max_relative_difference(z[stage].losses, ref.losses), 1e-5) << "ZeRO-" << stage;
    EXPECT_TRUE(z[stage].params_identical) << "ZeRO-" << stage;
  }
  const double whole = double(ref.memory.grad_bytes);  // DDP's flat gradient buffer
  if (std::getenv("TESSERA_TEST_VERBOSE"))
    std::fprintf(stderr, "rank %d: peaks %ld %ld %ld, whole gradients %.0f\n", r,
                 long(z[1].peak_bytes), long(z[2].peak_bytes), long(z[3].peak_bytes), whole);
  // On 2 ranks ZeRO-1 keeps the whole gradients and its half shard of them, ZeRO-2 its half
  // shard and, within a backward, the gradients of a few buckets (the send buffers in flight
  // are bounded); when ZeRO-2 accumulated whole gradients over the micro-batches its peak was
  // ZeRO-1's or more. (ZeRO-3's also has the gathered blocks, more than it saves on two.)
  EXPECT_LT(double(z[2].peak_bytes), double(z[1].peak_bytes) - 0.5 * whole);
}

TEST(Equivalence, LlamaOnTwoAndFourRanksUnderEveryZeroStageMatchesOneRank) {
  const int r = world().rank(), n = world().world_size();
  if (n != 4) GTEST_SKIP() << "needs 4 ranks (mpirun -np 4), have " << n;
  const fs::path dir = job_scratch_dir("mpi_llama");
  if (r == 0) tessera::testing::write_tiny_corpus(dir);
  world().barrier();
  const train::Config base = tessera::testing::tiny_llama_job(dir / "corpus.txt", 12);
  std::shared_ptr<Communicator> pair = world().split(r / 2, r);
  const RunResult ref = train_on(std::make_shared<LocalCommunicator>(), base, "one", dir);
  ASSERT_EQ(ref.losses.size(), 12u);
  EXPECT_LT(ref.losses.back(), ref.losses.front() - 0.3) << "the job should learn";
  for (int stage = 0; stage <= 3; ++stage) {
    train::Config z = base;
    z.parallel.zero_stage = stage;
    for (auto [comm, ranks] : {std::pair{pair, 2}, {world_comm(), 4}}) {
      const RunResult run = train_on(comm, z, fmt::format("z{}_{}", stage, ranks), dir);
      EXPECT_LE(max_relative_difference(run.losses, ref.losses), 1e-5)
          << "ZeRO-" << stage << ", " << ranks << " ranks";
      EXPECT_TRUE(run.params_identical) << "ZeRO-" << stage << ", " << ranks << " ranks";
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return tessera::testing::run_mpi_tests(argc, argv);
}
