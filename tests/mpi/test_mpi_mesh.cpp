// The process mesh and tensor parallelism under mpirun (CTest runs it with -np 4): the axes'
// communicators, and training equivalence. For 20 steps of a small f32 GPT (4 heads, a
// vocabulary of 259 that splits unevenly) and a tiny Llama (grouped-query attention, SwiGLU, an
// untied head, block recomputation), tensor parallelism over 2 and 4 ranks, with and without
// sequence parallelism (with dropout, with uneven rows), composed with data parallelism and
// ZeRO 0-3 on the data-parallel axis and with micro-batches, gives the one-rank losses within
// 1e-5 relative and the same final weights (gathered whole) within 1e-5 (relative L2); a
// checkpoint saved in one layout resumes in others.
//
// Every rank runs every test. Tests avoid ASSERT between collectives (a rank that returned
// early would leave the others waiting): they run all collectives first, then check.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>

#include "dist/local_comm.h"
#include "dist/mesh.h"
#include "gradcheck.h"
#include "mpi/mpi_test_main.h"
#include "mpi/tiny_job.h"
#include "nn/safetensors.h"
#include "scratch.h"
#include "train/trainer.h"

using namespace tessera;
using namespace tessera::dist;
namespace fs = std::filesystem;

namespace {

using tessera::testing::world;
using tessera::testing::world_comm;

using tessera::testing::job_scratch_dir;

// A scratch folder holding the tiny corpus (written by rank 0) for one test's runs.
fs::path corpus_dir(const std::string& name) {
  const fs::path dir = job_scratch_dir(name);
  if (world().rank() == 0) tessera::testing::write_tiny_corpus(dir);
  world().barrier();
  return dir;
}

// The world ranks of a communicator's members, in its rank order (as text).
std::string members(Communicator& c) {
  std::string out;
  for (const std::string& s : c.all_gather_bytes(std::to_string(world().rank()))) out += s + " ";
  return out;
}

TEST(Mesh, AxesAreSplitWithTensorParallelInnermost) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const int r = world().rank();
  Mesh tp2(world_comm(), 2);
  EXPECT_EQ(tp2.shape().dp, 2);
  EXPECT_EQ(members(*tp2.tp()), r < 2 ? "0 1 " : "2 3 ");
  EXPECT_EQ(members(*tp2.dp()), r % 2 == 0 ? "0 2 " : "1 3 ");
  EXPECT_EQ(tp2.tp_rank(), r % 2);
  EXPECT_EQ(tp2.dp_rank(), r / 2);
  EXPECT_EQ(tp2.pp()->world_size(), 1);
  EXPECT_EQ(tp2.describe(), "4 ranks = pp 1 x dp 2 x cp 1 x tp 2");
  Mesh tp4(world_comm(), 4);
  EXPECT_EQ(members(*tp4.tp()), "0 1 2 3 ");
  EXPECT_EQ(tp4.dp()->world_size(), 1);
  Mesh dp4(world_comm(), 1);
  EXPECT_EQ(members(*dp4.dp()), "0 1 2 3 ");
  tessera::testing::expect_error([] { Mesh bad(world_comm(), 3); },
                                 {"parallel.tp = 3", "does not divide the 4 ranks"});
}

struct RunResult {
  std::vector<double> losses;
  bool replicas_identical = true;  // data-parallel replicas' parameters equal after every step
  dist::MemoryReport memory;
  fs::path weights;                      // the run's model.safetensors on its lead rank, else empty
  double val_loss = 0;                   // the final evaluation's
  int64_t tp_bytes = -1, pp_bytes = -1;  // the last step's, by mesh axis
};

// Trains `cfg` on `comm` into dir/NAME_rank<r> (resuming from the checkpoint `resume` when
// given).
RunResult train_on(std::shared_ptr<Communicator> comm, train::Config cfg, const std::string& name,
                   const fs::path& dir, const std::string& resume = "") {
  RunResult res;
  train::RunOptions opt;
  opt.resume = resume;
  const fs::path out = dir / fmt::format("{}_rank{}", name, world().rank());
  opt.out_dir = out.string();
  opt.plot = false;
  opt.comm = comm;
  FILE* quiet = std::fopen("/dev/null", "w");
  opt.console = quiet;
  opt.on_step = [&](int64_t, double, DataParallel& dp) {
    const std::vector<std::string> all =
        dp.comm().all_gather_bytes(std::to_string(dp.parameter_checksum()));
    for (const std::string& s : all) res.replicas_identical &= s == all[0];
  };
  const train::RunSummary s = train::run_training(cfg, opt);
  std::fclose(quiet);
  res.losses = s.losses;
  res.memory = s.memory;
  if (s.last_eval.contains("val_loss")) res.val_loss = s.last_eval["val_loss"].get<double>();
  res.tp_bytes = s.tp_bytes_per_step, res.pp_bytes = s.pp_bytes_per_step;
  if (comm->rank() == 0) res.weights = out / "model.safetensors";
  return res;
}

double max_relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = a.size() == b.size() ? 0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(b[i]));
  return worst;
}

// How far two weight files are apart (names and shapes must match): ||a - b|| / ||b|| over all
// their elements, and the largest |a - b| of any element. The first is the bound: AdamW turns
// the f32 rounding differences of a reordered sum into absolute differences of order lr x
// (relative gradient difference) in elements whose gradient is tiny, so single elements may
// differ by ~1e-5 while the weights as a whole agree far closer.
struct WeightDifference {
  double relative = 0, max_abs = 0;
};
WeightDifference weight_difference(const fs::path& a, const fs::path& b) {
  const nn::SafetensorsFile fa = nn::read_safetensors(a.string());
  const nn::SafetensorsFile fb = nn::read_safetensors(b.string());
  EXPECT_EQ(fa.tensors.size(), fb.tensors.size()) << a << " vs " << b;
  double diff2 = 0, ref2 = 0, worst = 0;
  for (const auto& [name, t] : fa.tensors) {
    auto it = fb.tensors.find(name);
    if (it == fb.tensors.end()) {
      ADD_FAILURE() << name << " missing from " << b;
      continue;
    }
    EXPECT_EQ(t.shape(), it->second.shape()) << name;
    if (t.shape() != it->second.shape()) continue;
    const std::vector<float> x = t.to_vector(), y = it->second.to_vector();
    for (size_t i = 0; i < x.size(); ++i) {
      const double d = double(x[i]) - double(y[i]);
      diff2 += d * d, ref2 += double(y[i]) * double(y[i]);
      worst = std::max(worst, std::abs(d));
    }
  }
  return {std::sqrt(diff2 / std::max(ref2, 1e-300)), worst};
}

// A layout to compare with one rank: on ranks {0, 1} and {2, 3} (two runs side by side) or
// on all 4.
struct Layout {
  std::string name;
  train::Config cfg;
  bool four_ranks = false;
};

Layout layout(std::string name, train::Config c, int64_t tp, bool four_ranks, int64_t zero = 0,
              int64_t micro = 0) {
  c.parallel.tp = tp;
  c.parallel.zero_stage = zero;
  if (micro > 0) c.train.micro_batches = micro;
  c.parallel.sequence_parallel = name.find("sequence parallel") != std::string::npos;
  return {std::move(name), c, four_ranks};
}

// Runs each layout and compares it with one rank's run of `base`: losses within `bound`
// relative, final weights within `bound` relative L2.
void expect_layouts_match_one_rank(const train::Config& base, const std::string& job,
                                   const std::vector<Layout>& layouts, const fs::path& dir,
                                   double bound = 1e-5) {
  const int r = world().rank();
  auto local = std::make_shared<LocalCommunicator>();
  std::shared_ptr<Communicator> pair = world().split(r / 2, r);  // ranks {0,1} and {2,3}
  const RunResult ref = train_on(local, base, job + "_one", dir);
  ASSERT_EQ(ref.losses.size(), 20u);
  EXPECT_LT(ref.losses.back(), ref.losses.front() - 0.5) << job << ": the job should learn";
  for (size_t i = 0; i < layouts.size(); ++i) {
    const Layout& l = layouts[i];
    const RunResult run =
        train_on(l.four_ranks ? world_comm() : pair, l.cfg, fmt::format("{}_{}", job, i), dir);
    const double loss_diff = max_relative_difference(run.losses, ref.losses);
    EXPECT_LE(loss_diff, bound) << job << ", " << l.name;
    EXPECT_TRUE(run.replicas_identical) << job << ", " << l.name;
    EXPECT_GT(ref.val_loss, 0) << job;
    EXPECT_NEAR(run.val_loss, ref.val_loss, bound * ref.val_loss) << job << ", " << l.name;
    if (!run.weights.empty()) {
      const WeightDifference d = weight_difference(run.weights, ref.weights);
      EXPECT_LE(d.relative, bound) << job << ", " << l.name << ": final weights";
      EXPECT_LE(d.max_abs, 10 * bound) << job << ", " << l.name << ": final weights";
      std::printf(
          "[figure] %s, %s (rank %d's run): max loss difference %.2e relative; final "
          "weights %.2e relative (L2), largest element difference %.2e\n",
          job.c_str(), l.name.c_str(), r, loss_diff, d.relative, d.max_abs);
    }
    // Each rank holds its share of the split weights (plus the replicated norms and biases).
    if (l.cfg.parallel.zero_stage == 0) {
      EXPECT_LT(double(run.memory.param_bytes),
                (1.0 / double(l.cfg.parallel.tp) + 0.15) * double(ref.memory.param_bytes))
          << job << ", " << l.name;
    }
  }
}

TEST(TensorParallel, GptLayoutsOfTwoAndFourRanksMatchOneRank) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_tp_gpt");
  train::Config base = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  base.model.n_head = 4;
  base.model.vocab_size = 259;  // splits unevenly: 130 + 129, 65 + 65 + 65 + 64
  expect_layouts_match_one_rank(
      base, "gpt",
      {layout("tp 2", base, 2, false), layout("tp 4", base, 4, true),
       layout("tp 2, 2 micro-batches", base, 2, false, 0, 2), layout("tp 2 x dp 2", base, 2, true),
       layout("tp 2 x dp 2, ZeRO-1", base, 2, true, 1),
       layout("tp 2 x dp 2, ZeRO-2", base, 2, true, 2),
       layout("tp 2 x dp 2, ZeRO-3", base, 2, true, 3),
       layout("tp 2, sequence parallel", base, 2, false),
       layout("tp 4, sequence parallel", base, 4, true),
       layout("tp 2 x dp 2, sequence parallel, ZeRO-3", base, 2, true, 3)},
      dir);
}

// Sequence parallelism splits the tokens' rows: with dropout (each rank draws its rows' part of
// the one-rank mask) and with row counts the ranks cannot share evenly (micro-batches of 2 x 13
// tokens over 4 ranks: 7, 7, 6, 6; over 2: 13, 13). (Data parallelism is left out: its ranks
// draw dropout masks for their own rows, which one rank's run does not reproduce.)
TEST(TensorParallel, SequenceParallelWithDropoutAndUnevenRowsMatchesOneRank) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_sp_gpt");
  train::Config base = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  base.model.n_head = 4;
  base.model.vocab_size = 259;
  base.model.dropout = 0.1;
  base.train.seq_len = 13;
  base.train.micro_batches = 4;
  expect_layouts_match_one_rank(
      base, "gpt dropout",
      {layout("tp 2", base, 2, false), layout("tp 2, sequence parallel", base, 2, false),
       layout("tp 4, sequence parallel", base, 4, true)},
      dir);
}

// Pipeline parallelism: `l` with its blocks cut into pp x v stages under `schedule`.
Layout pipelined(Layout l, int64_t pp, const std::string& schedule = "1f1b", int64_t v = 1) {
  l.cfg.parallel.pp = pp;
  l.cfg.parallel.pp_schedule = schedule;
  l.cfg.parallel.pp_virtual_stages = v;
  return l;
}

// GPT (tied head: the first and last stages sum their embedding copies' gradients) and Llama
// (untied, with ZeRO-1/2 on the data-parallel axis) over 2 and 4 pipeline stages, every
// schedule, composed with tensor, sequence and data parallelism.
TEST(PipelineParallel, LayoutsOfEveryScheduleMatchOneRank) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_pp");
  train::Config gpt = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  gpt.model.n_layer = 4;
  gpt.model.n_head = 4;
  gpt.model.vocab_size = 259;
  gpt.train.micro_batches = 4;
  expect_layouts_match_one_rank(
      gpt, "gpt pipeline",
      {pipelined(layout("pp 2, 1F1B", gpt, 1, false), 2),
       pipelined(layout("pp 2, GPipe", gpt, 1, false), 2, "gpipe"),
       pipelined(layout("pp 2, interleaved 1F1B, 2 stages per rank", gpt, 1, false), 2,
                 "interleaved_1f1b", 2),
       pipelined(layout("pp 4, 1F1B", gpt, 1, true), 4),
       pipelined(layout("pp 2 x dp 2, 1F1B", gpt, 1, true), 2),
       pipelined(layout("pp 2 x tp 2, 1F1B", gpt, 2, true), 2),
       pipelined(layout("pp 2 x tp 2, sequence parallel, interleaved 1F1B", gpt, 2, true), 2,
                 "interleaved_1f1b", 2)},
      dir);
  train::Config llama = tessera::testing::tiny_llama_job(dir / "corpus.txt", 20);
  llama.model.n_layer = 4;
  llama.train.micro_batches = 2;
  expect_layouts_match_one_rank(
      llama, "llama pipeline",
      {pipelined(layout("pp 2, 1F1B", llama, 1, false), 2),
       pipelined(layout("pp 2 x dp 2, ZeRO-1, 1F1B", llama, 1, true, 1), 2),
       pipelined(layout("pp 2 x dp 2, ZeRO-2, interleaved 1F1B", llama, 1, true, 2), 2,
                 "interleaved_1f1b", 2)},
      dir);
}

// Context parallelism: `l` with each sequence cut into 2 cp chunks over cp ranks.
Layout context_parallel(Layout l, int64_t cp) {
  l.cfg.parallel.cp = cp;
  return l;
}

// GPT (learned positions) and Llama (rotary, grouped-query) with their sequences split over 2
// and 4 ranks (load-balanced chunks, keys and values all-gathered), composed with tensor,
// pipeline and data parallelism and ZeRO-3.
TEST(ContextParallel, LayoutsMatchOneRank) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_cp");
  train::Config gpt = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  gpt.model.n_head = 4;
  gpt.model.vocab_size = 259;
  expect_layouts_match_one_rank(
      gpt, "gpt context",
      {context_parallel(layout("cp 2", gpt, 1, false), 2),
       context_parallel(layout("cp 4", gpt, 1, true), 4),
       context_parallel(layout("cp 2 x tp 2", gpt, 2, true), 2),
       context_parallel(layout("cp 2 x dp 2, ZeRO-3", gpt, 1, true, 3), 2),
       context_parallel(pipelined(layout("cp 2 x pp 2, 2 micro-batches", gpt, 1, true, 0, 2), 2),
                        2)},
      dir);
  const train::Config llama = tessera::testing::tiny_llama_job(dir / "corpus.txt", 20);
  expect_layouts_match_one_rank(llama, "llama context",
                                {context_parallel(layout("cp 2", llama, 1, false), 2),
                                 context_parallel(layout("cp 4", llama, 1, true), 4),
                                 context_parallel(layout("cp 2 x tp 2", llama, 2, true), 2)},
                                dir);
}

// Eight ranks (CTest mpi_mesh_8_ranks): every axis at once and the three-axis mixes, GPT with
// 8 heads (tp up to 8) and 4 blocks, 4 micro-batches.
TEST(Mesh, EightRankLayoutsMatchOneRank) {
  if (world().world_size() != 8) GTEST_SKIP() << "needs 8 ranks (mpirun -np 8)";
  const fs::path dir = corpus_dir("mpi_mesh_8");
  train::Config gpt = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  gpt.model.n_layer = 4;
  gpt.model.n_head = 8;
  gpt.model.vocab_size = 259;
  gpt.train.micro_batches = 4;
  gpt.train.batch_size = 16;
  expect_layouts_match_one_rank(
      gpt, "gpt 8 ranks",
      {layout("tp 8", gpt, 8, true), layout("tp 4 x dp 2, ZeRO-1", gpt, 4, true, 1),
       pipelined(layout("pp 4 x dp 2", gpt, 1, true), 4),
       pipelined(layout("tp 2 x pp 2 x dp 2", gpt, 2, true), 2),
       pipelined(layout("tp 2 x pp 2 x dp 2, sequence parallel, interleaved 1F1B", gpt, 2, true), 2,
                 "interleaved_1f1b", 2),
       context_parallel(layout("tp 2 x cp 2 x dp 2, ZeRO-3", gpt, 2, true, 3), 2),
       context_parallel(pipelined(layout("tp 2 x pp 2 x cp 2", gpt, 2, true), 2), 2),
       layout("dp 8, ZeRO-2, 2 micro-batches", gpt, 1, true, 2, 2)},
      dir);
}

// Mixed precision on the mesh: bf16 GEMMs and fp16 with dynamic loss scaling, over tensor with
// sequence, pipeline and context parallelism, against one rank in the same precision. The
// split sums round in other orders at 16 bits, so the bound is 1e-3 (the f32 tests' is 1e-5).
TEST(Mesh, MixedPrecisionLayoutsMatchOneRank) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_mesh_mixed");
  for (const char* precision : {"bf16", "fp16"}) {
    train::Config c = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
    c.model.n_head = 4;
    c.train.precision = precision;
    c.train.micro_batches = 2;
    expect_layouts_match_one_rank(
        c, std::string("gpt ") + precision,
        {layout("tp 2, sequence parallel", c, 2, false), pipelined(layout("pp 2", c, 1, false), 2),
         context_parallel(layout("cp 2 x tp 2", c, 2, true), 2)},
        dir, 1e-3);
  }
}

TEST(TensorParallel, LlamaLayoutsMatchOneRank) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_tp_llama");
  const train::Config base = tessera::testing::tiny_llama_job(dir / "corpus.txt", 20);
  expect_layouts_match_one_rank(
      base, "llama",
      {layout("tp 2", base, 2, false), layout("tp 2 x dp 2", base, 2, true),
       layout("tp 2 x dp 2, ZeRO-3", base, 2, true, 3),
       layout("tp 2 x dp 2, sequence parallel", base, 2, true)},
      dir);
}

// Where a step-10 checkpoint is resumed: in a layout (on ranks {0,1} and {2,3}, or on all four)
// or on one rank, from the saving layout's checkpoint or from one rank's.
struct Resumption {
  std::string name;
  Layout layout;
  bool one_rank = false;       // on one rank (layout.cfg is then the base config)
  bool from_one_rank = false;  // one rank's checkpoint rather than the saver's
};

// Trains `base` on one rank and `saver` on all four, both checkpointing at step 10. The saver's
// checkpoint resumes bit-exact in its own layout; each resumption's steps 11-20 end within 1e-5
// of one rank's.
void expect_checkpoints_resume(const train::Config& base, const Layout& saver,
                               const std::vector<Resumption>& resumptions, const fs::path& dir) {
  const int r = world().rank();
  auto local = std::make_shared<LocalCommunicator>();
  std::shared_ptr<Communicator> pair = world().split(r / 2, r);
  const RunResult ref = train_on(local, base, "one", dir);
  const RunResult saved = train_on(world_comm(), saver.cfg, "saver", dir);
  const std::string step10 = (dir / "saver_rank0" / "checkpoints" / "step_00000010").string();
  const std::string ref_step10 =
      (dir / fmt::format("one_rank{}", r) / "checkpoints" / "step_00000010").string();
  const std::vector<double> ref_tail(ref.losses.begin() + 10, ref.losses.end());
  const std::vector<double> saved_tail(saved.losses.begin() + 10, saved.losses.end());
  EXPECT_EQ(train_on(world_comm(), saver.cfg, "same", dir, step10).losses, saved_tail)
      << "the same layout resumes bit-exact";
  for (size_t i = 0; i < resumptions.size(); ++i) {
    const Resumption& x = resumptions[i];
    std::shared_ptr<Communicator> comm = x.one_rank            ? local
                                         : x.layout.four_ranks ? world_comm()
                                                               : pair;
    const std::vector<double> losses = train_on(comm, x.layout.cfg, fmt::format("resumed{}", i),
                                                dir, x.from_one_rank ? ref_step10 : step10)
                                           .losses;
    EXPECT_LE(max_relative_difference(losses, ref_tail), 1e-5) << x.name;
    if (r == 0)
      std::printf(
          "[figure] resumed at step 10 from a %s checkpoint in %s: max loss difference "
          "%.2e relative\n",
          saver.name.c_str(), x.name.c_str(), max_relative_difference(losses, ref_tail));
  }
}

// A checkpoint is the whole model's whatever the layout that saved it (ckpt/whole_layout.h):
// saved at step 10 by tensor parallelism x data parallelism under ZeRO-1, it resumes bit-exact
// in that layout and within 1e-5 of one rank's losses in others (tensor parallelism over 4, one
// rank, data parallelism over 4 with ZeRO-3); and one rank's checkpoint resumes split.
TEST(TensorParallel, CheckpointsResumeInAnyLayout) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_tp_checkpoint");
  train::Config base = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  base.model.n_head = 4;
  base.model.vocab_size = 259;
  base.train.checkpoint_every = 10;
  base.train.checkpoint_async = 0;
  expect_checkpoints_resume(
      base, layout("tp 2 x dp 2 ZeRO-1", base, 2, true, 1),
      {{"tp 4", layout("", base, 4, true)},
       {"one rank", layout("", base, 1, false), true},
       {"dp 4, ZeRO-3", layout("", base, 1, true, 3)},
       {"one rank's checkpoint on tp 2", layout("", base, 2, false), false, true}},
      dir);
}

// The same across pipeline layouts: a checkpoint saved by pp 2 x tp 2 (a tied GPT of 4 blocks)
// resumes bit-exact there and within 1e-5 of one rank on one rank, pp 4 and tp 2 x dp 2; one
// rank's checkpoint resumes on an interleaved pp 2.
TEST(PipelineParallel, CheckpointsResumeInAnyLayout) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_pp_checkpoint");
  train::Config base = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 20);
  base.model.n_layer = 4;
  base.model.n_head = 4;
  base.model.vocab_size = 259;
  base.train.micro_batches = 2;
  base.train.checkpoint_every = 10;
  base.train.checkpoint_async = 0;
  expect_checkpoints_resume(
      base, pipelined(layout("pp 2 x tp 2", base, 2, true), 2),
      {{"one rank", layout("", base, 1, false), true},
       {"pp 4", pipelined(layout("", base, 1, true), 4)},
       {"tp 2 x dp 2, ZeRO-1", layout("", base, 2, true, 1)},
       {"one rank's checkpoint on interleaved pp 2",
        pipelined(layout("", base, 1, false), 2, "interleaved_1f1b", 2), false, true}},
      dir);
}

// The bytes each step moves on the tensor-parallel and pipeline axes, as counted by the
// communicators, against the analytic count for a GPT of L blocks, width C, N = b x T tokens
// per micro-batch of m, context K (elements; x 4 bytes):
//   tp:       m (N C (4L + 2) + 2 N tp)   per layer 2 all-reduces forward, 2 backward; the
//             embedding's and the head's; the loss's statistics all-gathered
//   tp + sp:  m (N C (8L + 4) + 2 N tp + (6L + 2) C + K C)   the same activations as gathers and
//             reduce-scatters both ways, plus the replicated norms', biases' and positions'
//             gradients summed
//   pp 2:     m N C on each rank (activations forward from the first, gradients back from the
//             last)
TEST(Mesh, BytesMovedPerStepMatchTheAnalyticCount) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const int r = world().rank();
  const fs::path dir = corpus_dir("mpi_mesh_bytes");
  train::Config base = tessera::testing::tiny_gpt_job(dir / "corpus.txt", 3);
  base.model.n_head = 4;
  base.model.vocab_size = 259;
  base.train.micro_batches = 2;
  base.optim.warmup_steps = 1;
  std::shared_ptr<Communicator> pair = world().split(r / 2, r);
  const int64_t L = base.model.n_layer, C = base.model.n_embd, K = base.model.context;
  const int64_t m = base.train.micro_batches, N = base.train.batch_size / m * base.train.seq_len;
  const RunResult tp = train_on(pair, layout("tp 2", base, 2, false).cfg, "tp", dir);
  const RunResult sp =
      train_on(pair, layout("tp 2, sequence parallel", base, 2, false).cfg, "sp", dir);
  train::Config deep = base;
  deep.model.n_layer = 4;
  const RunResult pp = train_on(pair, pipelined(layout("pp 2", deep, 1, false), 2).cfg, "pp", dir);
  const int64_t f = sizeof(float);
  EXPECT_EQ(tp.tp_bytes, f * m * (N * C * (4 * L + 2) + 2 * N * 2));
  EXPECT_EQ(sp.tp_bytes, f * m * (N * C * (8 * L + 4) + 2 * N * 2 + (6 * L + 2) * C + K * C));
  EXPECT_EQ(pp.pp_bytes, f * m * N * C);
  EXPECT_EQ(tp.pp_bytes, -1);
  if (r == 0)
    std::printf(
        "[figure] bytes per step and rank (L %ld, C %ld, N %ld, m %ld): tp 2 %ld, tp 2 + "
        "sequence parallel %ld, pp 2 %ld, each equal to its analytic count\n",
        long(L), long(C), long(N), long(m), long(tp.tp_bytes), long(sp.tp_bytes),
        long(pp.pp_bytes));
}

TEST(TensorParallel, LayoutsTheModelCannotTakeAreRefusedNamingTheSizes) {
  if (world().world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path dir = corpus_dir("mpi_tp_errors");
  train::RunOptions opt;
  opt.out_dir = (dir / fmt::format("run{}", world().rank())).string();
  opt.plot = false;
  opt.comm = world_comm();
  // 2 kv heads cannot be split over 4 ranks.
  const train::Config llama =
      layout("", tessera::testing::tiny_llama_job(dir / "corpus.txt", 3), 4, true).cfg;
  tessera::testing::expect_error([&] { train::run_training(llama, opt); },
                                 {"n_kv_head (2)", "multiples of 4"});
  // 3 does not divide 4 ranks.
  const train::Config gpt =
      layout("", tessera::testing::tiny_gpt_job(dir / "corpus.txt", 3), 3, true).cfg;
  tessera::testing::expect_error([&] { train::run_training(gpt, opt); },
                                 {"parallel.tp = 3", "does not divide the 4 ranks"});
}

}  // namespace

int main(int argc, char** argv) {
  return tessera::testing::run_mpi_tests(argc, argv);
}
