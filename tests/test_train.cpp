// End-to-end training through the trainer: a tiny GPT on a small generated text file and an MLP
// on small generated IDX images. Checks the run folder's contract (metrics.jsonl fields, weights,
// config), that loss falls, that bf16 and fp16 (with dynamic loss scaling) track f32, and that
// asking for a GPU where there is none is a clear error.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "autograd/grad_mode.h"
#if TESSERA_HAVE_CUDA
#include "cuda/device.h"
#endif
#include "gradcheck.h"
#include "nn/gpt.h"
#include "nn/weights.h"
#include "scratch.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::expect_error;

namespace {

fs::path temp_dir(const std::string& name) {
  return tessera::testing::scratch_dir("train_" + name);
}

// A corpus with learnable structure: verses built from a small vocabulary of words.
fs::path write_corpus(const fs::path& dir) {
  const char* words[] = {"and", "the",     "lord",   "said",  "unto",  "moses", "in",  "beginning",
                         "god", "created", "heaven", "earth", "light", "was",   "good"};
  Generator g(5);
  std::string text;
  for (int verse = 0; text.size() < 60000; ++verse) {
    text += std::to_string(verse % 50 + 1) + " ";
    int n = 6 + int(g.next_u64() % 8);
    for (int i = 0; i < n; ++i)
      text += std::string(words[g.next_u64() % 15]) + (i + 1 < n ? " " : ".\n");
  }
  fs::path p = dir / "corpus.txt";
  std::ofstream(p) << text;
  return p;
}

train::Config tiny_gpt_config(const fs::path& corpus, const std::string& precision) {
  std::string toml = fmt::format(R"(
[model]
kind = "gpt"
n_layer = 2
n_head = 2
n_embd = 32
context = 32
vocab_size = 256
[data]
kind = "text"
path = "{}"
val_fraction = 0.1
[optim]
lr = 3e-3
min_lr = 3e-4
warmup_steps = 5
schedule = "cosine"
[train]
steps = 60
batch_size = 8
micro_batches = 2
seq_len = 32
precision = "{}"
seed = 7
eval_every = 30
eval_batches = 4
log_every = 10
sample_every = 0
threads = 2
)",
                                 corpus.string(), precision);
  return train::parse_config(toml, "test.toml");
}

// Trains `cfg` into the run folder `out`, progress to stderr, no plot.
train::RunSummary train_to(const train::Config& cfg, const fs::path& out,
                           train::StepCallback on_step = nullptr) {
  train::RunOptions opt;
  opt.out_dir = out.string();
  opt.plot = false;
  opt.console = stderr;
  opt.on_step = std::move(on_step);
  return train::run_training(cfg, opt);
}

std::vector<nlohmann::json> read_metrics(const fs::path& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST(Train, TinyGPTLearnsAndWritesTheRunFolder) {
  fs::path dir = temp_dir("gpt");
  fs::path corpus = write_corpus(dir);
  train::Config cfg = tiny_gpt_config(corpus, "f32");
  train::RunSummary s = train_to(cfg, dir / "run");

  EXPECT_EQ(s.steps, 60);
  auto m = read_metrics(dir / "run");
  ASSERT_EQ(m.size(), 6u);  // every 10 steps
  for (const auto& r : m)
    for (const char* k : {"step", "loss", "lr", "ms_per_step", "tokens_per_s", "tflops_per_device"})
      EXPECT_TRUE(r.contains(k)) << k << " missing from " << r.dump();
  EXPECT_TRUE(m[2].contains("val_loss"));  // step 30
  EXPECT_TRUE(m[5].contains("val_loss"));  // step 60
  EXPECT_FALSE(m[0].contains("val_loss"));
  EXPECT_FALSE(m[0].contains("mfu"));  // no train.peak_tflops given
  EXPECT_GT(s.tflops_per_device, 0.0);
  // Loss starts near ln(256) = 5.55 and must fall well below it on this corpus.
  EXPECT_GT(m[0]["loss"].get<double>(), 3.0);
  EXPECT_LT(m[5]["val_loss"].get<double>(), 2.9);
  EXPECT_LT(s.final_loss, m[0]["loss"].get<double>() - 1.5);

  // The saved weights reproduce the model: same logits from a fresh model loaded from them.
  ASSERT_TRUE(fs::exists(dir / "run" / "model.safetensors"));
  ASSERT_TRUE(fs::exists(dir / "run" / "config.toml"));
  train::Config back = train::load_config(dir / "run" / "config.toml");
  EXPECT_EQ(back, cfg);
  nn::GPTConfig gc;
  gc.n_layer = 2, gc.n_head = 2, gc.n_embd = 32, gc.context = 32, gc.vocab_size = 256;
  Generator g1(1), g2(2);
  nn::GPT a(gc, g1), b(gc, g2);
  nn::load_weights(a, (dir / "run" / "model.safetensors").string());
  nn::load_weights(b, (dir / "run" / "model.safetensors").string());
  NoGradGuard ng;
  Tensor ids = Tensor::from_ints({1, 50, 100, 200, 255, 3}, Shape{1, 6});
  EXPECT_EQ(a.forward(ids).to_vector(), b.forward(ids).to_vector());
}

TEST(Train, BF16TracksF32) {
  fs::path dir = temp_dir("bf16");
  fs::path corpus = write_corpus(dir);
  train::RunSummary f32 = train_to(tiny_gpt_config(corpus, "f32"), dir / "f32");
  train::RunSummary bf = train_to(tiny_gpt_config(corpus, "bf16"), dir / "bf16");
  const double v32 = f32.last_eval["val_loss"].get<double>();
  const double vbf = bf.last_eval["val_loss"].get<double>();
  EXPECT_NE(v32, vbf);  // the bf16 run really computed in bf16
  std::cerr << "val_loss f32 " << v32 << " bf16 " << vbf << "\n";
  EXPECT_LT(std::fabs(vbf - v32) / v32, 0.02) << "f32 " << v32 << " bf16 " << vbf;
}

TEST(Train, BadConfigsAndMissingDataAreClearErrors) {
  fs::path dir = temp_dir("bad");
  train::Config cfg = tiny_gpt_config(dir / "no_such_corpus.txt", "f32");
  try {
    train_to(cfg, dir / "run");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_corpus.txt"), std::string::npos) << e.what();
  }
}

TEST(Train, FP16WithDynamicLossScalingTracksF32) {
  fs::path dir = temp_dir("fp16");
  fs::path corpus = write_corpus(dir);
  train::RunSummary f32 = train_to(tiny_gpt_config(corpus, "f32"), dir / "f32");
  train::Config c16 = tiny_gpt_config(corpus, "fp16");
  c16.train.loss_scale_window = 20;  // the scale grows during the run
  c16.train.peak_tflops = 0.5;
  train::RunSummary h = train_to(c16, dir / "fp16");
  const double v32 = f32.last_eval["val_loss"].get<double>();
  const double v16 = h.last_eval["val_loss"].get<double>();
  EXPECT_NE(v32, v16);  // the fp16 run really computed in fp16
  std::cerr << "val_loss f32 " << v32 << " fp16 " << v16 << ", loss scale " << h.loss_scale
            << ", skipped " << h.loss_scale_skipped << "\n";
  // fp16 keeps 3 more mantissa bits than bf16, whose bound (BF16TracksF32) is 2%.
  EXPECT_LT(std::fabs(v16 - v32) / v32, 0.02) << "f32 " << v32 << " fp16 " << v16;
  EXPECT_EQ(h.bad_steps, 0);
  // 60 steps with a window of 20: the scale doubled at least once (more if nothing overflowed).
  EXPECT_GE(h.loss_scale, 65536.0 * 2) << "skipped " << h.loss_scale_skipped;
  auto m = read_metrics(dir / "fp16");
  ASSERT_FALSE(m.empty());
  for (const auto& r : m)
    EXPECT_TRUE(r.contains("loss_scale") && r.contains("loss_scale_skipped")) << r.dump();
  EXPECT_EQ(m.back()["loss_scale_skipped"].get<int64_t>(), h.loss_scale_skipped);
  for (const auto& r : m)
    EXPECT_DOUBLE_EQ(r["mfu"].get<double>(), r["tflops_per_device"].get<double>() / 0.5);
  for (const auto& r : read_metrics(dir / "f32")) EXPECT_FALSE(r.contains("loss_scale"));
}

TEST(Train, FP16OverflowHalvesTheScaleAndSkipsStepsWithoutStoppingTheRun) {
  fs::path dir = temp_dir("fp16_overflow");
  train::Config c = tiny_gpt_config(write_corpus(dir), "fp16");
  c.train.loss_scale = std::ldexp(1.0, 30);  // gradients x 2^30 overflow fp16 (max 65504)
  c.train.max_bad_steps = 2;                 // overflow skips must not count as bad steps
  // A step leaves the parameters bit for bit unchanged exactly when the scaler skipped it.
  std::vector<uint64_t> checksums;
  train::RunSummary s = train_to(c, dir / "run", [&](int64_t, double, dist::DataParallel& dp) {
    checksums.push_back(dp.parameter_checksum());
  });
  EXPECT_EQ(s.steps, 60);
  EXPECT_EQ(s.bad_steps, 0);
  int64_t unchanged = 0;
  for (size_t i = 1; i < checksums.size(); ++i) unchanged += checksums[i] == checksums[i - 1];
  EXPECT_GE(s.loss_scale_skipped, 8);  // 2^30 falls to 2^22 or below before a step fits
  EXPECT_EQ(unchanged + 1, s.loss_scale_skipped) << "step 1 is skipped too (no checksum before)";
  EXPECT_LT(s.loss_scale, std::ldexp(1.0, 30));
  // Each skipped step halved the scale, so it ends 2^-skipped below where it started (the
  // window of 2000 clean steps is never reached in 60).
  EXPECT_EQ(s.loss_scale, std::ldexp(1.0, 30 - int(s.loss_scale_skipped)));
  // Between the skips the run learns.
  EXPECT_LT(s.final_loss, s.losses[0] - 1.5);
}

TEST(Train, CudaDeviceWithoutAGpuIsAClearError) {
#if TESSERA_HAVE_CUDA
  if (cuda::available()) GTEST_SKIP() << "a CUDA device is present (tests/cuda cover it)";
#endif
  fs::path dir = temp_dir("nogpu");
  train::Config c = tiny_gpt_config(write_corpus(dir), "bf16");
  c.train.device = "cuda";
  try {
    train_to(c, dir / "run");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("train.device = \"cuda\""), std::string::npos) << m;
#if TESSERA_HAVE_CUDA
    EXPECT_NE(m.find("no CUDA device"), std::string::npos) << m;
#else
    EXPECT_NE(m.find("without the CUDA backend"), std::string::npos) << m;
#endif
  }
}
