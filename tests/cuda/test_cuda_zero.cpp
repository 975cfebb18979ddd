// ZeRO stages 1-3 on one GPU (LocalCommunicator, one rank) against stage 0 (DDP) on the same
// GPU. On one rank every engine is plain training, so they must agree:
//   - the engines themselves, driven with a loss whose gradients involve no atomics
//     (sum(p * p * t): element-wise products and a fixed-order sum), AdamW and SGD, with and
//     without a loss scale, clipping active: parameters, optimizer state and gradient norms
//     bit for bit (the sharded update is the flat optimizer's kernel over the same range, the
//     norm the same fixed-order f64 reduction);
//   - the trainer on the tiny GPT, stages 1-3 (ZeRO-3 with its staged gather per block) against
//     stage 0, and a checkpoint saved under stage 3 resumed under stage 0. Here the engines
//     differ in how gradients reach the flat buffer (DDP and stage 1: added into views of it,
//     the GEMMs accumulating with beta = 1; stages 2-3: fresh per-parameter tensors copied into
//     the bucket), which is exact in arithmetic but may run other cuBLASLt algorithms (beta = 1
//     vs 0), so these comparisons have bounds; two stage-0 runs are compared too ("stage 0
//     rerun": no CUDA kernel uses atomics, so it should be exact) and each line says "exact"
//     when it is. Bounds:
//     each step's loss within 1e-5 relative and the final weights within 1e-4 normwise relative
//     (max |a - b| / max |b|): rounding-level gradient differences carried through a few AdamW
//     steps, where an element whose gradient nearly cancels moves by up to lr x its relative
//     error.
// Skipped without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/rng.h"
#include "cuda_test_util.h"
#include "dist/data_parallel.h"
#include "dist/local_comm.h"
#include "mpi/tiny_job.h"
#include "nn/module.h"
#include "nn/safetensors.h"
#include "ops/ops.h"
#include "scratch.h"
#include "train/trainer.h"

using namespace tessera;
using namespace tessera::cudatest;
namespace fs = std::filesystem;

namespace {

class CudaZero : public CudaTest {};

fs::path temp_dir(const std::string& name) {
  return tessera::testing::scratch_dir("cuda_zero_" + name);
}

// ---- Engines ----

// Matrices (decayed) and vectors (not), with sizes that leave alignment padding between them.
class SmallModel final : public nn::Module {
 public:
  explicit SmallModel(uint64_t seed) {
    Generator g(seed);
    w1_ = Tensor::randn(Shape{40, 30}, g, 0.f, 0.5f);
    b1_ = Tensor::randn(Shape{30}, g, 0.f, 0.5f);
    w2_ = Tensor::randn(Shape{7, 50}, g, 0.f, 0.5f);
    g2_ = Tensor::randn(Shape{3}, g, 0.f, 0.5f);
    register_parameter("w1", w1_);
    register_parameter("b1", b1_);
    register_parameter("w2", w2_);
    register_parameter("g2", g2_);
  }

 private:
  Tensor w1_, b1_, w2_, g2_;
};

struct EngineRun {
  std::vector<double> norms;               // clip_grad_norm's result per step
  std::vector<std::vector<float>> values;  // every parameter after the last step
  std::vector<std::vector<float>> state;   // the optimizer's state buffers
  uint64_t checksum = 0;
  dist::MemoryReport memory;
  int64_t cpu_bytes_for_engine = 0;   // the CPU allocator's change while the engine was built
  bool parameters_on_device = false;  // right after the engine was built
};

// Four steps of two micro-batches each; micro-batch i of step s has the loss
// grad_scale * sum_p sum(p * p * t_{s,i,p}) / 2 with fixed random t, so each gradient is
// grad_scale * p * t exactly, in the same order on every engine.
// from_host: the model stays on the host and the engine is told its device (ZeRO only).
EngineRun train_engine(int stage, const dist::ShardedOptimizerOptions& optim, float grad_scale,
                       bool from_host = false) {
  const Device dev = Device::cuda(0);
  SmallModel model(21);
  if (!from_host) model.to(dev);
  dist::LocalCommunicator comm;
  dist::DataParallelOptions o;
  o.zero_stage = stage;
  o.bucket_mb = 0.002;  // about 500 floats: several buckets
  o.optimizer = optim;
  if (from_host) o.device = dev;
  const int64_t cpu_before = int64_t(allocator_for(Device::cpu()).stats().in_use);
  std::unique_ptr<dist::DataParallel> dp = dist::make_data_parallel(model, comm, o);
  EngineRun out;
  out.cpu_bytes_for_engine = int64_t(allocator_for(Device::cpu()).stats().in_use) - cpu_before;
  out.parameters_on_device = true;
  for (const Tensor& p : model.parameters()) out.parameters_on_device &= p.device() == dev;
  out.memory = dp->memory();
  Generator targets(77);
  for (int s = 0; s < 4; ++s) {
    dp->zero_grad();
    for (int i = 0; i < 2; ++i) {
      dp->begin_micro_batch(i == 1);
      Tensor loss;
      for (const Tensor& p : model.parameters()) {
        const Tensor t = Tensor::randn(p.shape(), targets).to(dev);
        const Tensor term = ops::sum(ops::mul(ops::mul(p, p), t));
        loss = loss.defined() ? ops::add(loss, term) : term;
      }
      ops::scale(loss, grad_scale / 2.f).backward();
    }
    dp->finish_backward();
    out.norms.push_back(dp->clip_grad_norm(1.0, grad_scale));  // the norms are > 1: clipped
    dp->step(0.05f);
  }
  dp->gather_all();
  for (const Tensor& p : model.parameters()) out.values.push_back(p.to_vector());
  dp->release_all();
  for (const auto& [name, t] : dp->training_state().state) out.state.push_back(t.to_vector());
  out.checksum = dp->parameter_checksum();
  return out;
}

TEST_F(CudaZero, EnginesMatchDdpBitForBit) {
  dist::ShardedOptimizerOptions adamw;
  adamw.adamw.weight_decay = 0.1f;
  dist::ShardedOptimizerOptions sgd;
  sgd.name = "sgd";
  sgd.sgd.momentum = 0.9f;
  sgd.sgd.weight_decay = 0.01f;
  for (const auto* optim : {&adamw, &sgd}) {
    for (float grad_scale : {1.f, 1024.f}) {
      const EngineRun ddp = train_engine(0, *optim, grad_scale);
      for (int stage = 1; stage <= 3; ++stage) {
        const std::string what =
            fmt::format("zero{} engine vs ddp: {}, grad scale {}", stage, optim->name, grad_scale);
        SCOPED_TRACE(what);
        const EngineRun z = train_engine(stage, *optim, grad_scale);
        std::vector<float> got, want;
        for (size_t i = 0; i < ddp.values.size(); ++i) {
          got.insert(got.end(), z.values[i].begin(), z.values[i].end());
          want.insert(want.end(), ddp.values[i].begin(), ddp.values[i].end());
        }
        expect_exact(what + ": parameters", "f32", got, want);
        ASSERT_EQ(z.state.size(), ddp.state.size());
        for (size_t i = 0; i < z.state.size(); ++i)
          expect_exact(what + ": optimizer state " + std::to_string(i), "f32", z.state[i],
                       ddp.state[i]);
        EXPECT_EQ(z.norms, ddp.norms);
        for (double n : z.norms) EXPECT_GT(n, 1.0);  // clipping took part
        EXPECT_EQ(z.checksum, ddp.checksum);
        // Every buffer is on the device: building the engine took nothing from the CPU
        // allocator, and the device bytes are counted (one rank: the whole flat buffer).
        EXPECT_EQ(z.cpu_bytes_for_engine, 0);
        const int64_t numel = int64_t(got.size());
        EXPECT_GE(z.memory.param_bytes, numel * 4);
        EXPECT_GE(z.memory.grad_bytes, (stage == 1 ? 2 : 1) * numel * 4);
        EXPECT_GE(z.memory.optimizer_bytes, int64_t(optim->name == "adamw" ? 2 : 1) * numel * 4);
      }
    }
  }
}

// Runs everywhere: the shard step refuses tensors that are not the shard (size, device).
// ZeRO with the model still on the host (how the trainer starts ZeRO-3 on a GPU, so that a model
// larger than one GPU never has to be on one whole): the engine copies what it keeps from the
// host and moves the parameters to the device: the same training, bit for bit, as with the
// model moved first.
TEST_F(CudaZero, EnginesTakeTheParametersFromTheHost) {
  dist::ShardedOptimizerOptions adamw;
  adamw.adamw.weight_decay = 0.1f;
  for (int stage = 1; stage <= 3; ++stage) {
    const std::string what = fmt::format("zero{} engine, model on the host", stage);
    SCOPED_TRACE(what);
    const EngineRun moved = train_engine(stage, adamw, 1024.f);
    const EngineRun staged = train_engine(stage, adamw, 1024.f, /*from_host=*/true);
    EXPECT_TRUE(staged.parameters_on_device);
    ASSERT_EQ(staged.values.size(), moved.values.size());
    for (size_t i = 0; i < moved.values.size(); ++i)
      expect_exact(what + ": parameter " + std::to_string(i), "f32", staged.values[i],
                   moved.values[i]);
    for (size_t i = 0; i < moved.state.size(); ++i)
      expect_exact(what + ": optimizer state " + std::to_string(i), "f32", staged.state[i],
                   moved.state[i]);
    EXPECT_EQ(staged.norms, moved.norms);
    EXPECT_EQ(staged.memory.param_bytes, moved.memory.param_bytes);
  }
}

TEST(ZeroShardStep, ChecksTheShardTensors) {
  const std::vector<ParamSegment> segs = {{"w", Shape{4, 8}, 0, 32}, {"b", Shape{8}, 32, 8}};
  dist::ShardedOptimizer opt(segs, {true, false}, 48, 16, 48, {});
  const Tensor values = Tensor::zeros(Shape{32}), grads = Tensor::ones(Shape{32});
  opt.step(0.1f, values, grads);  // the right shard: one update
  EXPECT_EQ(opt.step_count(), 1);
  try {
    opt.step(0.1f, values, Tensor::ones(Shape{31}));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("gradients f32[31]"), std::string::npos) << m;
    EXPECT_NE(m.find("expected contiguous f32 [32] on cpu"), std::string::npos) << m;
  }
  EXPECT_EQ(opt.step_count(), 1);  // a refused step counts nothing
}

// ---- The trainer ----

train::RunSummary run(const train::Config& cfg, const fs::path& out, std::string resume = "") {
  train::RunOptions o;
  o.out_dir = out.string();
  o.plot = false;
  o.console = stderr;
  o.comm = std::make_shared<dist::LocalCommunicator>();
  o.resume = std::move(resume);
  return train::run_training(cfg, o);
}

train::Config gpt_job(const fs::path& corpus, int stage) {
  train::Config c = tessera::testing::tiny_gpt_job(corpus, 6);
  c.train.device = "cuda";
  c.train.micro_batches = 2;  // accumulation: the first micro-batch's gradients are kept
  c.parallel.zero_stage = stage;
  return c;
}

// Every parameter of a run's final weights, in name order.
std::vector<float> final_weights(const fs::path& run_dir) {
  const nn::SafetensorsFile f = nn::read_safetensors((run_dir / "model.safetensors").string());
  std::vector<float> all;
  for (const auto& [name, t] : f.tensors) {
    const std::vector<float> v = t.to_vector();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

double worst_loss_error(const std::vector<double>& got, const std::vector<double>& want,
                        size_t from = 0) {
  if (got.size() + from != want.size()) return INFINITY;
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i)
    err = std::max(err, std::fabs(got[i] - want[from + i]) / std::fabs(want[from + i]));
  return err;
}

constexpr double kLossBound = 1e-5;
constexpr double kWeightBound = 1e-4;

void expect_matches(const std::string& what, const train::RunSummary& got, const fs::path& got_dir,
                    const train::RunSummary& want, const fs::path& want_dir, size_t from = 0) {
  const double loss = worst_loss_error(got.losses, want.losses, from);
  const bool loss_ok = loss <= kLossBound;
  report(what + ": losses", "f32", loss == 0 ? "0 (exact)" : sci(loss), sci(kLossBound), loss_ok);
  EXPECT_LE(loss, kLossBound) << what << ": worst relative loss difference";
  const double w = rel_error(final_weights(got_dir), final_weights(want_dir));
  report(what + ": final weights", "f32", w == 0 ? "0 (exact)" : sci(w), sci(kWeightBound),
         w <= kWeightBound);
  EXPECT_LE(w, kWeightBound) << what << ": final weights, normwise relative difference";
}

TEST_F(CudaZero, TrainerStagesMatchStage0) {
  const fs::path dir = temp_dir("stages");
  const fs::path corpus = tessera::testing::write_tiny_corpus(dir);
  const train::RunSummary ddp = run(gpt_job(corpus, 0), dir / "stage0");
  ASSERT_EQ(ddp.losses.size(), 6u);
  EXPECT_LT(ddp.final_loss, ddp.losses[0]);  // it learns
  // The GPU's own run-to-run variation, for reference (same bounds).
  const train::RunSummary again = run(gpt_job(corpus, 0), dir / "stage0_again");
  expect_matches("zero: stage 0 rerun vs stage 0", again, dir / "stage0_again", ddp,
                 dir / "stage0");
  for (int stage = 1; stage <= 3; ++stage) {
    const std::string name = "stage" + std::to_string(stage);
    const train::RunSummary z = run(gpt_job(corpus, stage), dir / name);
    expect_matches("zero: " + name + " vs stage 0 (tiny gpt)", z, dir / name, ddp, dir / "stage0");
    EXPECT_EQ(z.bad_steps, 0) << name;
    // Device bytes counted (on one rank each stage keeps the whole flat buffer).
    EXPECT_GT(z.memory.param_bytes, 0) << name;
    EXPECT_GT(z.memory.grad_bytes, 0) << name;
    EXPECT_GT(z.memory.optimizer_bytes, 0) << name;
  }
}

TEST_F(CudaZero, Stage3CheckpointResumesUnderStage0) {
  const fs::path dir = temp_dir("ckpt");
  const fs::path corpus = tessera::testing::write_tiny_corpus(dir);
  train::Config c = gpt_job(corpus, 3);
  c.train.steps = 8;
  c.train.checkpoint_every = 3;
  c.train.checkpoint_async = 0;
  const train::RunSummary full = run(c, dir / "full");
  ASSERT_EQ(full.checkpoints_saved, 3);
  const fs::path out = dir / "resumed";
  fs::copy(dir / "full", out, fs::copy_options::recursive);
  train::Config r = c;
  r.parallel.zero_stage = 0;  // a resumable key: the sharded state is re-cut for DDP
  const train::RunSummary b = run(r, out, (out / "checkpoints" / "step_00000006").string());
  ASSERT_EQ(b.start_step, 6);
  ASSERT_EQ(b.losses.size(), 2u);
  expect_matches("zero: stage 3 checkpoint resumed under stage 0", b, out, full, dir / "full", 6);
}

}  // namespace
