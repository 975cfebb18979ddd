// tessera plan: the meta-device run of the real trainer against real runs of the same config
// (memory to the byte class), the persistent state ZeRO shards, the collectives the trainer
// counts, pipeline stages, and plans of models far larger than this machine.
#include <gtest/gtest.h>
#include <omp.h>

#include "core/allocator.h"
#include "core/device_peak.h"
#include "gradcheck.h"
#include "kernels/cpu/matmul.h"
#include "mpi/tiny_job.h"
#include "plan/cluster.h"
#include "plan/meta_run.h"
#include "plan/planner.h"
#include "plan_test_config.h"
#include "scratch.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

using tessera::testing::tiny_config;

// The CPU allocator's peak over a real one-rank run of cfg, above what was live before it.
double measured_peak(const train::Config& cfg, const std::string& name) {
  Allocator& cpu = allocator_for(Device::cpu());
  const size_t before = cpu.stats().in_use;
  cpu.reset_peak();
  train::RunOptions opt;
  opt.out_dir = tessera::testing::scratch_dir("plan_" + name).string();
  opt.plot = false;
  opt.console = stderr;
  train::run_training(cfg, opt);
  return double(cpu.stats().peak_in_use - before);
}

double predicted_peak(const train::Config& cfg) {
  return double(plan::run_rank_on_meta(cfg, 0, 1, meta::AllocatorModel::host, cfg.train.steps)
                    .memory.peak_in_use);
}

// The meta device's allocator peak is the host allocator's for the same run: the same code made
// the same requests. The real run also holds its batches on the host and its data, a few KiB.
TEST(plan, PeakMemoryMatchesARealRun) {
  struct Case {
    const char* name;
    train::Config cfg;
  };
  const Case cases[] = {
      {"gpt_f32", tiny_config("gpt")},
      {"gpt_bf16_recompute",
       tiny_config("gpt", {"train.precision=\"bf16\"", "model.recompute=\"blocks\""})},
      {"llama_f32", tiny_config("llama")},
      {"llama_one_micro_batch", tiny_config("llama", {"train.micro_batches=1"})},
  };
  for (const Case& c : cases) {
    const double real = measured_peak(c.cfg, c.name), plan = predicted_peak(c.cfg);
    std::printf("[figure] %s: predicted peak %.0f bytes, measured %.0f (%.2f%%)\n", c.name, plan,
                real, 100 * (plan - real) / real);
    EXPECT_NEAR(plan, real, 0.05 * real) << c.name;
  }
}

// ZeRO shards what each rank keeps between steps: the optimizer state from stage 1 (1/world, up
// to the shards' alignment), the gradients from 2, the weights from 3 (each keeps buffers for
// the parameters in flight besides its shard).
TEST(plan, ZeroShardsThePersistentState) {
  auto persistent = [](int stage, int world) {
    const train::Config c = tiny_config("llama", {fmt::format("parallel.zero_stage={}", stage)});
    return plan::run_rank_on_meta(c, 0, world, meta::AllocatorModel::cuda).persistent;
  };
  const dist::MemoryReport one = persistent(0, 1);
  const dist::MemoryReport z1 = persistent(1, 4), z2 = persistent(2, 4), z3 = persistent(3, 4);
  auto quarter = [](int64_t whole, int64_t got) {
    EXPECT_NEAR(double(got), double(whole) / 4, 0.05 * double(whole) / 4) << whole << " " << got;
  };
  EXPECT_NEAR(double(z1.param_bytes), double(one.param_bytes), 0.01 * double(one.param_bytes));
  quarter(one.optimizer_bytes, z1.optimizer_bytes);
  EXPECT_LT(z2.grad_bytes, one.grad_bytes / 2);
  quarter(one.optimizer_bytes, z3.optimizer_bytes);
  EXPECT_LT(z3.param_bytes, one.param_bytes / 2);
}

// The collectives the meta communicator records on the tensor-parallel group carry exactly the
// bytes the trainer's own count reports (two independent paths to the same figure).
TEST(plan, TensorParallelTraceMatchesTheTrainersCount) {
  const train::Config c = tiny_config("gpt", {"parallel.tp=2"});
  const plan::RankRun run = plan::run_rank_on_meta(c, 0, 4, meta::AllocatorModel::cuda);
  double tp_bytes = 0;
  for (const meta::Event& e : run.step)
    if (e.kind == meta::EventKind::collective && e.collective.group.stride == 1 &&
        e.collective.group.size == 2)
      tp_bytes += e.collective.bytes;
  EXPECT_GT(run.summary.tp_bytes_per_step, 0);
  EXPECT_EQ(tp_bytes, double(run.summary.tp_bytes_per_step));
}

// One simulated rank per stage; the stages hold different layers, and the schedule leaves a
// bubble.
TEST(plan, PipelineStagesArePlannedEach) {
  const train::Config c = tiny_config("llama", {"parallel.pp=2", "train.micro_batches=4"});
  const plan::Plan p = plan::make_plan(c, plan::parse_cluster("h100x8"), 4);
  ASSERT_EQ(p.memory.size(), 2u);
  EXPECT_EQ(p.memory[0].rank, 0);
  EXPECT_EQ(p.memory[1].rank, 2);
  EXPECT_EQ(p.memory[1].pp_stage, 1);
  EXPECT_GT(p.timeline.bubble_seconds, 0);
  EXPECT_GT(p.timeline.step_seconds, p.timeline.compute_seconds);
  EXPECT_GT(p.mfu, 0);
  EXPECT_LT(p.mfu, 1);
}

// MFU is model FLOPs against the datasheet peak of the compute dtype, as the trainer's metrics
// count it: the GPU table's for a GPU cluster; for a local one this CPU's ISA x clock peak, not
// the rates its kernels are timed by (here a made-up device, far from any CPU's).
TEST(plan, MfuIsAgainstTheDatasheetPeak) {
  const train::Config bf16 = tiny_config("gpt", {"train.precision=\"bf16\""});
  const plan::Plan h = plan::make_plan(bf16, plan::parse_cluster("h100x8"), 2);
  EXPECT_DOUBLE_EQ(h.peak_flops, gpu_datasheet("h100").bf16.flops);
  EXPECT_EQ(h.peak_source, "H100 SXM5 80GB datasheet, bf16");
  EXPECT_DOUBLE_EQ(h.mfu, h.model_flops_per_step / (h.timeline.step_seconds * 2 * h.peak_flops));
  // f32 GEMMs are f32, never TF32.
  const plan::Plan f = plan::make_plan(tiny_config("gpt"), plan::parse_cluster("a100x1"));
  EXPECT_DOUBLE_EQ(f.peak_flops, 19.5e12);

  plan::DeviceSpec made_up;
  made_up.name = "made up";
  made_up.peak_f32 = made_up.peak_tf32 = made_up.peak_bf16 = made_up.peak_f16 = 1e15;
  made_up.memory_bandwidth = 1e12;
  const plan::Plan l = plan::make_plan(bf16, plan::local_cluster(made_up, 1));
  const DevicePeak cpu = cpu::gemm_datasheet_peak(omp_get_max_threads());
  EXPECT_GT(l.peak_flops, 0);
  EXPECT_DOUBLE_EQ(l.peak_flops, cpu.bf16.flops);
  EXPECT_EQ(l.peak_source, cpu.describe(DType::bf16));
  EXPECT_DOUBLE_EQ(l.mfu, l.model_flops_per_step / (l.timeline.step_seconds * l.peak_flops));
}

// A plan is of training steps: its run never evaluates, not even at the last step, which it
// times. An image classifier's evaluation over the test set used to be the planned step on one
// GPU, and on eight it failed: its batches were shared with data-parallel peers that a meta run
// only stands in for.
TEST(plan, AClassifierIsPlannedWithoutItsEvaluation) {
  const fs::path dir = tessera::testing::scratch_dir("plan_classifier");
  tessera::testing::write_tiny_images(dir);
  const train::Config cfg = train::parse_config(
      "[model]\nkind = \"mlp\"\nmlp_hidden = 16\nmlp_layers = 2\n"
      "[data]\nkind = \"fashion-mnist\"\npath = \"" +
          dir.string() +
          "\"\n[optim]\nwarmup_steps = 0\n"
          "[train]\nsteps = 3\nbatch_size = 16\neval_every = 1\nthreads = 1\n",
      "classifier.toml");
  const plan::RankRun one = plan::run_rank_on_meta(cfg, 0, 1, meta::AllocatorModel::host);
  EXPECT_TRUE(one.summary.last_eval.empty()) << one.summary.last_eval.dump();
  EXPECT_EQ(one.summary.steps, 2);
  const plan::Plan eight = plan::make_plan(cfg, plan::parse_cluster("h100x8"));
  EXPECT_TRUE(eight.fits()) << plan::format_plan(eight);
  EXPECT_GT(eight.timeline.step_seconds, 0);
}

// Llama 3.1 70B on 64 H100s: built on the meta device, so the plan takes no host memory for
// its 70 billion parameters; without sharding it cannot fit an 80 GiB device, split over tensor
// and pipeline ranks it can.
TEST(plan, ModelsLargerThanThisMachinePlanWithoutMemory) {
  const std::vector<std::string> keys = {"train.seq_len=4096", "train.batch_size=512",
                                         "train.micro_batches=8", "train.precision=\"bf16\"",
                                         "model.recompute=\"blocks\""};
  auto big = [&](std::vector<std::string> more) {
    more.insert(more.begin(), keys.begin(), keys.end());  // `more` wins
    return tiny_config("llama", more, "preset = \"llama3.1-70b\"");
  };
  Allocator& cpu = allocator_for(Device::cpu());
  cpu.reset_peak();
  const size_t before = cpu.stats().in_use;
  const plan::Plan whole = plan::make_plan(big({}), plan::parse_cluster("h100x64"));
  EXPECT_LT(cpu.stats().peak_in_use - before, size_t(256) << 20);
  EXPECT_FALSE(whole.fits());
  EXPECT_GT(whole.memory[0].weights, 70e9 * 4 * 0.95);  // f32 master weights, whole
  // Megatron's way: tp 8 in a node with sequence parallelism, pp 4, one sequence per
  // micro-batch.
  const plan::Plan split =
      plan::make_plan(big({"parallel.tp=8", "parallel.pp=4", "parallel.sequence_parallel=1",
                           "parallel.zero_stage=1", "train.micro_batches=64"}),
                      plan::parse_cluster("h100x64"));
  EXPECT_TRUE(split.fits()) << plan::format_plan(split);
  ASSERT_EQ(split.memory.size(), 4u);
  for (const plan::RankMemory& m : split.memory)
    EXPECT_LT(m.weights, 70e9 * 4 / 32 * 1.2) << m.pp_stage;  // a 32nd, embeddings aside
  // 1F1B: the first stage keeps the most micro-batches in flight.
  EXPECT_GT(split.memory[0].activations, split.memory[3].activations);
  EXPECT_GT(split.timeline.bubble_seconds, 0);
}

}  // namespace
