// Checkpoints across world sizes, under mpirun -np 4 (CTest; see CMakeLists.txt). A checkpoint
// saved by N ranks (ZeRO-1: one optimizer shard per rank) is loaded on M ranks, its shards
// re-cut, for N->M = 1->2, 2->1, 4->2 (and 4->2 into ZeRO-3, whose parameters are sharded too):
//  - re-cutting is lossless: saved again at once by the M ranks, the weights file is byte for
//    byte the same and the optimizer state, reassembled over the shards, bit for bit;
//  - training continues identically: the M-rank continuation's losses equal the uninterrupted
//    N-rank run's. Each run splits the global batch of 8 into micro-batches of the same rows on
//    N and M ranks, so the same forward and backward passes run and only the order of the f32
//    gradient sums differs; that can change the last bits of the weights (compared to 1e-5
//    absolute, against updates of lr = 3e-3),
//    and the f32 losses so far have come out bit-identical (asserted to 1e-6, reported exactly).
//    Dropout is off (each rank draws its own masks), and so is clipping (the global norm's sum
//    order differs with the shards).
//
// Every rank runs every test; collectives come first, checks after (no ASSERT between them).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "ckpt/checkpoint.h"
#include "ckpt/run_state.h"
#include "core/file_io.h"
#include "dist/local_comm.h"
#include "dist/mpi_comm.h"
#include "mpi/mpi_test_main.h"
#include "mpi/tiny_job.h"
#include "nn/safetensors.h"
#include "train/task.h"
#include "train/trainer.h"

using namespace tessera;
using namespace tessera::dist;
namespace fs = std::filesystem;

namespace {

using tessera::testing::world;
using tessera::testing::world_comm;

// Global batch 8 in micro-batches of `rows` rows on each of `ranks` ranks.
train::Config job(const fs::path& corpus, int ranks, int rows) {
  train::Config c = tessera::testing::tiny_gpt_job(corpus, 8);
  c.optim.grad_clip = 0;
  c.parallel.zero_stage = 1;
  c.train.micro_batches = 8 / (ranks * rows);
  c.train.checkpoint_every = 4;
  c.train.checkpoint_async = 1;
  return c;
}

struct Trained {
  train::RunSummary sum;
  std::string weights;  // model.safetensors bytes (rank 0 of the run)
};

Trained train_on(std::shared_ptr<Communicator> comm, const train::Config& cfg, const fs::path& out,
                 const std::string& resume = "") {
  train::RunOptions o;
  o.out_dir = out.string();
  o.plot = false;
  o.console = std::fopen("/dev/null", "w");
  o.comm = std::move(comm);
  o.resume = resume;
  Trained r;
  r.sum = train::run_training(cfg, o);
  std::fclose(o.console);
  if (o.comm->rank() == 0)
    r.weights = read_small_file((out / "model.safetensors").string(), 1 << 30);
  return r;
}

// Loads checkpoint `from` on the communicator's ranks and saves it again, untrained, as step
// 4 of run folder `out`.
void reshard(std::shared_ptr<Communicator> comm, const train::Config& cfg, const std::string& from,
             const fs::path& out) {
  auto task = train::make_task(cfg, {comm->rank(), comm->world_size()});
  DataParallelOptions o;
  o.zero_stage = int(cfg.parallel.zero_stage);
  o.optimizer.name = cfg.optim.name;
  auto dp = make_data_parallel(task->model(), *comm, o);
  const ckpt::VerifiedCheckpoint c = ckpt::verify_checkpoint(from, &cfg);
  ckpt::load_into(c, *dp);
  const ckpt::LoopState loop = ckpt::restore_run_state(c.state, *task, from);
  ckpt::CheckpointWriter w(*comm, out.string(), 1);
  const ckpt::TrainerState st = ckpt::capture_trainer_state(loop, *task, *dp);
  w.start(ckpt::take_snapshot(*dp, task->model(), st, train::to_toml(cfg), cfg.model.kind), false);
  const ckpt::SaveResult r = w.finish();
  EXPECT_TRUE(r.ok) << r.error;
}

// A checkpoint's optimizer state reassembled over its shards: buffer name -> raw f32 bytes.
std::map<std::string, std::string> full_optimizer_state(const std::string& dir) {
  const ckpt::VerifiedCheckpoint c = ckpt::verify_checkpoint(dir, nullptr);
  std::map<std::string, std::string> out;
  for (const ckpt::OptimizerShard& s : c.state.optimizer_shards) {
    nn::SafetensorsFile f = nn::read_safetensors((fs::path(dir) / s.file).string());
    for (const auto& [name, t] : f.tensors)
      out[name].append(static_cast<const char*>(t.raw_data()), t.nbytes());
  }
  return out;
}

// The largest absolute difference between two weights files' values (INFINITY if they do not
// hold the same tensors). Absolute: AdamW's update is about lr in size wherever the gradient is,
// however small, so rounding shows as absolute differences far below lr = 3e-3.
double weights_difference(const std::string& a_bytes, const std::string& b_bytes,
                          const fs::path& scratch) {
  write_file_atomically((scratch / "a.safetensors").string(), a_bytes);
  write_file_atomically((scratch / "b.safetensors").string(), b_bytes);
  nn::SafetensorsFile a = nn::read_safetensors((scratch / "a.safetensors").string());
  nn::SafetensorsFile b = nn::read_safetensors((scratch / "b.safetensors").string());
  if (a.tensors.size() != b.tensors.size()) return INFINITY;
  double m = 0;
  for (const auto& [name, ta] : a.tensors) {
    auto it = b.tensors.find(name);
    if (it == b.tensors.end() || it->second.numel() != ta.numel()) return INFINITY;
    const float *x = ta.data<float>(), *y = it->second.data<float>();
    for (int64_t i = 0; i < ta.numel(); ++i) m = std::max(m, double(std::abs(x[i] - y[i])));
  }
  return m;
}

double max_relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-12));
  return m;
}

std::vector<double> tail(const std::vector<double>& v, size_t from) {
  return from <= v.size() ? std::vector<double>(v.begin() + long(from), v.end())
                          : std::vector<double>{};
}

TEST(Resharding, CheckpointsResumeOnOtherWorldSizes) {
  const int r = world().rank(), n = world().world_size();
  if (n != 4) GTEST_SKIP() << "needs 4 ranks (mpirun -np 4), have " << n;
  // Rank 0 picks the folder (unique per job) and tells the others.
  std::string base;
  if (r == 0) {
    base = (fs::temp_directory_path() /
            fmt::format("tessera_test_mpi_ckpt_{}", static_cast<long>(::getpid())))
               .string();
    fs::remove_all(base);
    tessera::testing::write_tiny_corpus(base);
  }
  base = world().all_gather_bytes(base)[0];
  const fs::path dir(base), corpus = dir / "corpus.txt";
  auto local = std::make_shared<LocalCommunicator>();
  std::shared_ptr<Communicator> pair = world().split(r / 2, r);  // ranks {0,1} and {2,3}
  const bool in_pair = r < 2;

  // Uninterrupted runs, each saving at step 4: 1 rank (rank 0), 2 ranks (0, 1), 4 ranks.
  Trained one, two, four;
  if (r == 0) one = train_on(local, job(corpus, 1, 4), dir / "one");
  if (in_pair) two = train_on(pair, job(corpus, 2, 4), dir / "two");
  four = train_on(world_comm(), job(corpus, 4, 2), dir / "four");
  world().barrier();
  const auto step4 = [&](const char* run) { return ckpt::checkpoint_dir((dir / run).string(), 4); };

  // Re-cut: loaded on another world size and saved again at once.
  if (in_pair) reshard(pair, job(corpus, 2, 4), step4("one"), dir / "recut_one_to_two");
  if (r == 0) reshard(local, job(corpus, 1, 4), step4("two"), dir / "recut_two_to_one");
  if (in_pair) reshard(pair, job(corpus, 2, 2), step4("four"), dir / "recut_four_to_two");
  train::Config z3 = job(corpus, 2, 2);  // ZeRO-3: parameters sharded too
  z3.parallel.zero_stage = 3;
  if (in_pair) reshard(pair, z3, step4("four"), dir / "recut_four_to_two_z3");
  world().barrier();

  // Resumed on another world size from step 4.
  Trained one_to_two, two_to_one, four_to_two, four_to_two_z3;
  if (in_pair) one_to_two = train_on(pair, job(corpus, 2, 4), dir / "one_to_two", step4("one"));
  if (r == 0) two_to_one = train_on(local, job(corpus, 1, 4), dir / "two_to_one", step4("two"));
  if (in_pair) four_to_two = train_on(pair, job(corpus, 2, 2), dir / "four_to_two", step4("four"));
  if (in_pair) four_to_two_z3 = train_on(pair, z3, dir / "four_to_two_z3", step4("four"));
  world().barrier();

  if (r == 0) {
    ASSERT_EQ(one.sum.losses.size(), 8u);
    EXPECT_LT(one.sum.losses.back(), one.sum.losses.front() - 0.3) << "the job should learn";
    struct Case {
      const char* name;
      const char *from, *recut;
      const Trained& saved;
      const Trained& resumed;
    };
    for (const Case& c :
         {Case{"1 -> 2", "one", "recut_one_to_two", one, one_to_two},
          Case{"2 -> 1", "two", "recut_two_to_one", two, two_to_one},
          Case{"4 -> 2", "four", "recut_four_to_two", four, four_to_two},
          Case{"4 (ZeRO-1) -> 2 (ZeRO-3)", "four", "recut_four_to_two_z3", four, four_to_two_z3}}) {
      const std::string a = step4(c.from), b = step4(c.recut);
      const bool same_weights = read_small_file(a + "/model.safetensors", 1 << 30) ==
                                read_small_file(b + "/model.safetensors", 1 << 30);
      EXPECT_TRUE(same_weights) << c.name << ": re-cut weights differ";
      const auto sa = full_optimizer_state(a), sb = full_optimizer_state(b);
      EXPECT_EQ(sa.size(), 2u) << c.name;  // exp_avg, exp_avg_sq
      EXPECT_TRUE(sa == sb) << c.name << ": re-cut optimizer state differs";
      const bool same_state = same_weights && sa == sb;
      const auto ta = ckpt::verify_checkpoint(a, nullptr).state;
      const auto tb = ckpt::verify_checkpoint(b, nullptr).state;
      EXPECT_EQ(ta.data, tb.data) << c.name;
      EXPECT_EQ(ta.rngs, tb.rngs) << c.name;
      EXPECT_EQ(ta.optimizer_steps, tb.optimizer_steps) << c.name;
      EXPECT_NE(ta.optimizer_shards.size(), tb.optimizer_shards.size()) << c.name;
      // Sample accounting: the same samples on any world size, and the resumed run continues
      // the saved run's digest to the same end.
      ASSERT_TRUE(ta.samples_digest.has_value()) << c.name;
      EXPECT_EQ(ta.samples_digest, tb.samples_digest) << c.name;
      EXPECT_EQ(c.saved.sum.samples_digest, one.sum.samples_digest) << c.name;
      EXPECT_EQ(c.resumed.sum.samples_digest, c.saved.sum.samples_digest) << c.name;

      EXPECT_EQ(c.resumed.sum.start_step, 4) << c.name;
      const std::vector<double> expect = tail(c.saved.sum.losses, 4);
      const double dl = max_relative_difference(c.resumed.sum.losses, expect);
      const double dw = weights_difference(c.resumed.weights, c.saved.weights, dir);
      EXPECT_LE(dl, 1e-6) << c.name << ": continued losses";
      EXPECT_LE(dw, 1e-5) << c.name << ": final weights (largest absolute difference)";
      std::printf("%s: re-cut state %s; continued losses %s, final weights %s\n", c.name,
                  same_state ? "bit-identical" : "DIFFERS",
                  dl == 0 ? "bit-identical" : fmt::format("within {:.2g}", dl).c_str(),
                  c.resumed.weights == c.saved.weights ? "bit-identical"
                                                       : fmt::format("within {:.2g}", dw).c_str());
    }
  }
  world().barrier();
  if (r == 0) fs::remove_all(dir);
}

}  // namespace

int main(int argc, char** argv) {
  return tessera::testing::run_mpi_tests(argc, argv);
}
