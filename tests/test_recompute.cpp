// Activation recomputation (autograd/checkpoint.h, model.recompute = "blocks"): gradients bit
// for bit those of the plain backward (f32, dropout replayed, bf16 and f16 autocast), leaf hooks
// fire once with the final gradient (also for a parameter used inside and outside a
// checkpoint), the misuse errors, training through the trainer under every ZeRO stage and a
// resume give the plain run's losses, and a bigger GPT's peak tensor memory falls by at least
// the activations the blocks no longer keep.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "autograd/checkpoint.h"
#include "autograd/grad_mode.h"
#include "ckpt/checkpoint.h"
#include "core/allocator.h"
#include "core/backend.h"
#include "dist/local_comm.h"
#include "gradcheck.h"
#include "mpi/tiny_job.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::expect_error;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() /
               ("tessera_test_recompute_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

nn::GPTConfig small_gpt(nn::Recompute r, float dropout) {
  nn::GPTConfig c;
  c.n_layer = 3, c.n_head = 2, c.n_embd = 32, c.context = 16, c.vocab_size = 64;
  c.dropout = dropout;
  c.recompute = r;
  return c;
}

Tensor random_ids(Generator& g, int64_t b, int64_t t, int64_t vocab) {
  std::vector<int32_t> v(size_t(b * t));
  for (auto& x : v) x = int32_t(g.next_u64() % uint64_t(vocab));
  return Tensor::from_ints(v, Shape{b, t});
}

struct StepResult {
  float loss = 0;
  std::map<std::string, std::vector<float>> grads;
  uint64_t dropout_offset = 0;
};

// One forward and backward of a fresh GPT (seed 3) on a fixed batch, under an autocast dtype.
StepResult gpt_step(nn::Recompute r, float dropout, DType autocast, Device device = Device::cpu()) {
  Generator g(3);
  nn::GPT model(small_gpt(r, dropout), g);
  model.to(device);
  Generator data(9);
  Tensor x = random_ids(data, 4, 16, 64).to(device), y = random_ids(data, 4, 16, 64).to(device);
  StepResult out;
  Tensor loss;
  {
    AutocastGuard guard(autocast);
    loss = model.loss(x, y);
  }
  loss.backward();  // outside the guard, as the trainer does it
  out.loss = loss.item();
  for (const auto& [name, p] : model.named_parameters()) {
    EXPECT_TRUE(p.grad().defined()) << name;
    if (p.grad().defined()) out.grads[name] = p.grad().to_vector();
  }
  out.dropout_offset = model.dropout_generator().offset();
  return out;
}

void expect_identical(const StepResult& a, const StepResult& b) {
  EXPECT_EQ(a.loss, b.loss);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (const auto& [name, g] : a.grads) {
    auto it = b.grads.find(name);
    ASSERT_NE(it, b.grads.end()) << name;
    EXPECT_TRUE(g == it->second) << name << " differs";
  }
  EXPECT_EQ(a.dropout_offset, b.dropout_offset);
}

}  // namespace

// Every parameter's gradient is the plain backward's, bit for bit: same ops on the same inputs
// in the same order. With dropout the recompute redraws the forward's masks (and leaves the
// stream where the forward left it); under autocast it computes in the forward's dtype.
TEST(Recompute, GPTGradientsAreBitIdentical) {
  struct Case {
    float dropout;
    DType autocast;
  };
  for (Case c : {Case{0.f, DType::f32}, Case{0.2f, DType::f32}, Case{0.f, DType::bf16},
                 Case{0.2f, DType::bf16}, Case{0.f, DType::f16}}) {
    SCOPED_TRACE(fmt::format("dropout {} autocast {}", c.dropout, dtype_name(c.autocast)));
    const StepResult plain = gpt_step(nn::Recompute::none, c.dropout, c.autocast);
    const StepResult re = gpt_step(nn::Recompute::blocks, c.dropout, c.autocast);
    expect_identical(plain, re);
    if (c.dropout > 0) {
      EXPECT_GT(plain.dropout_offset, 0u);
    }
  }
  // The comparison can fail: a different dropout stream changes the gradients.
  EXPECT_NE(gpt_step(nn::Recompute::none, 0.2f, DType::f32).grads["h.0.mlp.c_fc.weight"],
            gpt_step(nn::Recompute::none, 0.f, DType::f32).grads["h.0.mlp.c_fc.weight"]);
}

// The same on a GPU: the mechanism is ops on the inputs' device, and every CUDA kernel sums in
// a fixed order (tests/cuda/test_cuda_gpt.cpp), so bit-identity holds there too.
TEST(Recompute, GPTGradientsAreBitIdenticalOnTheGpu) {
  const DeviceBackend* cuda = find_backend(DeviceType::cuda);
  if (!cuda) GTEST_SKIP() << "built without CUDA";
  if (cuda->device_count() == 0) GTEST_SKIP() << "no CUDA device: " << cuda->unavailable_reason();
  for (DType autocast : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(autocast));
    expect_identical(gpt_step(nn::Recompute::none, 0.2f, autocast, Device::cuda(0)),
                     gpt_step(nn::Recompute::blocks, 0.2f, autocast, Device::cuda(0)));
  }
}

// The input's gradient (the node's own output) and the block's parameters' are the plain
// ones, bit for bit when the input is used only inside the checkpoint (a GPT block's input: its
// two uses, ln_1 and the residual add, are summed in the same order). A further use outside
// re-associates the sum of its three contributions (outside + (inside sum) instead of the plain
// engine's arrival order): equal to rounding. The generator replay leaves the stream where the
// forward left it.
TEST(Recompute, BlockInputGradientIsBitIdentical) {
  for (DType autocast : {DType::f32, DType::bf16}) {
    for (bool outside_use : {false, true}) {
      std::vector<std::vector<float>> results[2];
      for (int use_checkpoint = 0; use_checkpoint < 2; ++use_checkpoint) {
        Generator g(4), drop_gen(77);
        nn::BlockInit init;
        init.n_embd = 32, init.n_head = init.n_kv_head = 4,
        init.mlp_hidden = 128;  // GPT-2 components otherwise
        init.dropout = 0.1f, init.dropout_gen = &drop_gen;
        nn::Block block(init, g);
        Tensor x = Tensor::randn(Shape{2, 8, 32}, g).set_requires_grad(true);
        Tensor w = Tensor::randn(Shape{2, 8, 32}, g);
        Tensor y;
        {
          AutocastGuard guard(autocast);
          Tensor b = use_checkpoint
                         ? autograd::checkpoint("test_block",
                                                [&](const Tensor& in) { return block.forward(in); },
                                                x, block.parameters(), {&drop_gen})
                         : block.forward(x);
          y = ops::sum(ops::mul(outside_use ? ops::add(b, x) : b, w));
        }
        const uint64_t offset_after_forward = drop_gen.offset();
        y.backward();
        EXPECT_EQ(drop_gen.offset(), offset_after_forward);
        results[use_checkpoint].push_back({y.item()});
        results[use_checkpoint].push_back(x.grad().to_vector());
        for (const Tensor& p : block.parameters())
          results[use_checkpoint].push_back(p.grad().to_vector());
      }
      SCOPED_TRACE(fmt::format("{} outside use {}", dtype_name(autocast), outside_use));
      ASSERT_EQ(results[0].size(), results[1].size());
      for (size_t i = 0; i < results[0].size(); ++i) {
        if (outside_use && i == 1) {  // x's gradient: one f32 re-association
          float scale = 0;
          for (float v : results[0][1]) scale = std::max(scale, std::fabs(v));
          for (size_t k = 0; k < results[0][1].size(); ++k)
            EXPECT_NEAR(results[0][1][k], results[1][1][k], 4e-7f * scale) << k;
          continue;
        }
        EXPECT_TRUE(results[0][i] == results[1][i]) << "tensor " << i;
      }
    }
  }
}

// DDP / ZeRO listen to grad-ready hooks: each must fire once, with the final gradient, and the
// later blocks' hooks before the earlier blocks' gradients exist (the overlap survives).
TEST(Recompute, HooksFireOnceWithFinalGradientsBlockByBlock) {
  Generator g(3);
  nn::GPT model(small_gpt(nn::Recompute::blocks, 0.1f), g);
  const nn::NamedTensors params = model.named_parameters();
  std::map<std::string, int> fired;
  std::map<std::string, std::vector<float>> at_fire;
  std::map<std::string, bool> first_block_had_grad;
  Tensor first_block_weight = model.h[0]->mlp.c_fc.weight;
  for (const auto& [name, p] : params) {
    Tensor t = p;
    const std::string n = name;
    t.on_grad_ready([&, n](Tensor& grad) {
      ++fired[n];
      at_fire[n] = grad.to_vector();
      first_block_had_grad[n] = first_block_weight.grad().defined();
    });
  }
  Generator data(9);
  Tensor x = random_ids(data, 2, 16, 64), y = random_ids(data, 2, 16, 64);
  model.loss(x, y).backward();
  for (const auto& [name, p] : params) {
    EXPECT_EQ(fired[name], 1) << name;
    EXPECT_TRUE(at_fire[name] == p.grad().to_vector()) << name << " changed after its hook";
  }
  const std::string last = "h." + std::to_string(model.h.size() - 1) + ".";
  for (const auto& [name, p] : params)
    if (name.rfind(last, 0) == 0) {
      EXPECT_FALSE(first_block_had_grad[name]) << name;
    }
  EXPECT_TRUE(first_block_had_grad["wpe.weight"]);  // the embeddings come after every block
}

// A parameter used inside a checkpoint and outside it: its hook waits for both uses, and its
// gradient is the plain backward's.
TEST(Recompute, ParameterSharedInsideAndOutside) {
  std::vector<float> grads[2], at_fire[2];
  int fired[2] = {0, 0};
  for (int use_checkpoint = 0; use_checkpoint < 2; ++use_checkpoint) {
    Generator g(5);
    Tensor w = Tensor::randn(Shape{8, 8}, g).set_requires_grad(true);
    Tensor x = Tensor::randn(Shape{4, 8}, g).set_requires_grad(true);
    const int k = use_checkpoint;
    w.on_grad_ready([&, k](Tensor& gw) {
      ++fired[k];
      at_fire[k] = gw.to_vector();
    });
    auto fn = [&](const Tensor& in) { return ops::gelu(ops::matmul(in, w)); };
    Tensor h = use_checkpoint ? autograd::checkpoint("test_shared", fn, x, {w}) : fn(x);
    ops::sum(ops::matmul(h, w)).backward();
    grads[k] = w.grad().to_vector();
    const std::vector<float> gx = x.grad().to_vector();
    grads[k].insert(grads[k].end(), gx.begin(), gx.end());
  }
  EXPECT_TRUE(grads[0] == grads[1]);
  EXPECT_EQ(fired[0], 1);
  EXPECT_EQ(fired[1], 1);
  EXPECT_TRUE(at_fire[1] == at_fire[0]);
}

TEST(Recompute, MisuseIsAClearError) {
  Generator g(6);
  Tensor w = Tensor::randn(Shape{4, 4}, g).set_requires_grad(true);
  Tensor v = Tensor::randn(Shape{4, 4}, g).set_requires_grad(true);
  Tensor x = Tensor::randn(Shape{2, 4}, g).set_requires_grad(true);
  // A parameter the function reads but the caller did not list.
  Tensor y = autograd::checkpoint(
      "test_unlisted", [&](const Tensor& in) { return ops::matmul(ops::matmul(in, w), v); }, x,
      {w});
  expect_error([&] { ops::sum(y).backward(); },
               {"test_unlisted", "listed parameters", "f32[4, 4]"});
  // A tensor computed outside the function (its graph would run twice).
  Tensor outside = ops::scale(w, 2.f);
  Tensor z = autograd::checkpoint(
      "test_outside", [&](const Tensor& in) { return ops::matmul(in, outside); }, x, {w});
  expect_error([&] { ops::sum(z).backward(); }, {"test_outside", "computed outside", "scale"});
  expect_error(
      [&] {
        autograd::checkpoint("test_param", [](const Tensor& in) { return in; }, x, {outside});
      },
      {"test_param", "only leaves"});
  // A function whose draws differ between the forward and the recompute.
  Generator drop(1);
  int calls = 0;
  Tensor d = autograd::checkpoint(
      "test_draws",
      [&](const Tensor& in) { return ops::dropout(in, ++calls == 1 ? 0.5f : 0.f, drop); }, x, {},
      {&drop});
  expect_error([&] { ops::sum(d).backward(); }, {"test_draws", "generator #0", "offset"});
  // Without grad mode it is the plain function: nothing recorded.
  NoGradGuard no_grad;
  EXPECT_FALSE(autograd::checkpoint("test_nograd",
                                    [&](const Tensor& in) { return ops::matmul(in, w); }, x, {w})
                   .requires_grad());
}

// Through the trainer: every ZeRO stage on one rank (ZeRO-3 runs the staged forward, whose
// boundary markers re-gather a block's parameters before its recompute) and bf16 give the
// plain run's losses, with dropout on.
TEST(Recompute, TrainingLossesMatchUnderEveryZeroStage) {
  const fs::path dir = temp_dir("train");
  train::Config base = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 5);
  base.model.dropout = 0.1;
  base.train.micro_batches = 2;
  auto run = [&](const train::Config& c, const std::string& name) {
    train::RunOptions opt;
    opt.out_dir = (dir / name).string();
    opt.plot = false;
    opt.comm = std::make_shared<dist::LocalCommunicator>();
    opt.console = std::fopen("/dev/null", "w");
    train::RunSummary s = train::run_training(c, opt);
    std::fclose(opt.console);
    return s.losses;
  };
  for (const char* precision : {"f32", "bf16"}) {
    train::Config c = base;
    c.train.precision = precision;
    const std::vector<double> plain = run(c, fmt::format("plain_{}", precision));
    ASSERT_EQ(plain.size(), 5u);
    c.model.recompute = "blocks";
    for (int stage = 0; stage <= 3; ++stage) {
      if (std::string(precision) == "bf16" && stage != 0 && stage != 3) continue;
      c.parallel.zero_stage = stage;
      EXPECT_EQ(run(c, fmt::format("re_{}_z{}", precision, stage)), plain)
          << precision << " stage " << stage;
    }
  }
}

TEST(Recompute, ResumeIsBitExact) {
  const fs::path dir = temp_dir("resume");
  train::Config c = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 6);
  c.model.dropout = 0.1;
  c.model.recompute = "blocks";
  c.train.checkpoint_every = 3;
  auto run = [&](const fs::path& out, const std::string& resume) {
    train::RunOptions opt;
    opt.out_dir = out.string();
    opt.plot = false;
    opt.comm = std::make_shared<dist::LocalCommunicator>();
    opt.console = std::fopen("/dev/null", "w");
    opt.resume = resume;
    train::RunSummary s = train::run_training(c, opt);
    std::fclose(opt.console);
    return s;
  };
  const train::RunSummary full = run(dir / "full", "");
  ASSERT_EQ(full.losses.size(), 6u);
  const train::RunSummary resumed =
      run(dir / "full", ckpt::checkpoint_dir((dir / "full").string(), 3));
  EXPECT_EQ(resumed.start_step, 3);
  ASSERT_EQ(resumed.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(resumed.losses[i], full.losses[3 + i]) << i;
}

TEST(Recompute, ConfigKeyIsForGPTOnly) {
  train::Config c = tessera::testing::tiny_gpt_job("corpus.txt", 5);
  EXPECT_EQ(c.model.recompute, "none");
  expect_error([] { train::parse_config("[model]\nrecompute = \"layers\"\n", "r.toml"); },
               {"model.recompute", "\"none\", \"blocks\""});
  expect_error(
      [] {
        train::parse_config(
            "[model]\nkind = \"mlp\"\nrecompute = \"blocks\"\n[data]\nkind = \"fashion-mnist\"\n",
            "r.toml");
      },
      {"model.recompute = 'blocks'", "model.kind = 'mlp'"});
  expect_error([] { nn::recompute_from_name("all"); }, {"'all'", "\"none\" or \"blocks\""});
}

// Peak tensor memory of one forward + backward of a 6-layer GPT, C = 256, T = 256, B = 8, f32.
// Counting what a block keeps for backward without recomputation, in units U = B T C floats:
// ln_1's output (1, saved by c_attn), q|k|v (3, saved by attention), the attention output
// (1, saved by c_proj), the residual sum h (1, saved by ln_2), ln_2's output (1, saved by
// c_fc), and the pre-activation and output of the fused c_fc + GELU (4 + 4): 15 U besides its
// input. With recomputation a block keeps its input alone, and during backward one block at a
// time has its 15 U back. The peak (at the start of the backward) therefore falls by about
// (L - 1) 15 U (measured: 74 U for L = 6); we assert (L - 1) 12 U, 3 U of slack per block
// for an op that comes to save a little less than counted here (a bf16 copy, a recomputed
// GELU), not enough to hide a block that keeps its activations.
TEST(Recompute, PeakMemoryFallsByTheBlocksActivations) {
  nn::GPTConfig c;
  c.n_layer = 6, c.n_head = 4, c.n_embd = 256, c.context = 256, c.vocab_size = 256;
  const int64_t B = 8, T = 256;
  Generator data(1);
  Tensor x = random_ids(data, B, T, c.vocab_size), y = random_ids(data, B, T, c.vocab_size);
  Allocator& alloc = allocator_for(Device::cpu());
  size_t peak[2] = {0, 0};
  float loss[2] = {0, 0};
  for (int r = 0; r < 2; ++r) {
    c.recompute = r ? nn::Recompute::blocks : nn::Recompute::none;
    Generator g(2);
    nn::GPT model(c, g);
    // The gradients' buffers exist before the measurement, as in training (FlatParameters).
    for (Tensor p : model.parameters()) p.set_grad(Tensor::zeros(p.shape()));
    alloc.reset_peak();
    const size_t before = alloc.stats().in_use;
    Tensor l = model.loss(x, y);
    l.backward();
    loss[r] = l.item();
    peak[r] = alloc.stats().peak_in_use - before;
  }
  const double U = double(B * T * c.n_embd) * sizeof(float);
  std::cerr << "peak above the model: plain " << double(peak[0]) / (1 << 20) << " MiB, recompute "
            << double(peak[1]) / (1 << 20) << " MiB, U = " << U / (1 << 20) << " MiB\n";
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_GT(double(peak[0]) - double(peak[1]), double(c.n_layer - 1) * 12 * U);
}
