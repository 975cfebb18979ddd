// End-to-end training through the trainer: a tiny GPT on a small generated text file and an MLP
// on small generated IDX images. Checks the run folder's contract (metrics.jsonl fields, weights,
// config), that loss falls, that bf16 and fp16 (with dynamic loss scaling) track f32, and that
// asking for a GPU where there is none is a clear error.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "autograd/grad_mode.h"
#include "core/backend.h"
#include "core/device_peak.h"
#include "core/host_cores.h"
#include "core/profiler.h"
#include "gradcheck.h"
#include "kernels/cpu/matmul.h"
#include "nn/gpt.h"
#include "nn/weights.h"
#include "scratch.h"
#include "train/config.h"
#include "train/mfu_peak.h"
#include "train/run_report.h"
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
  // No train.peak_tflops: MFU against this CPU's datasheet f32 peak with the run's 2 threads.
  const DevicePeak cpu = cpu::gemm_datasheet_peak(int(cfg.train.threads));
  const double peak = cpu.f32.flops / 1e12;
  ASSERT_GT(peak, 0) << cpu.f32.basis;
  for (const auto& r : m) {
    EXPECT_DOUBLE_EQ(r["mfu_peak_tflops"].get<double>(), peak) << r.dump();
    EXPECT_DOUBLE_EQ(r["mfu"].get<double>(), r["tflops_per_device"].get<double>() / peak);
    EXPECT_EQ(r["mfu_peak"], cpu.describe(DType::f32));
  }
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

// --profile: each rank's breakdown of the steps after the first, in the run folder; the
// families' times add up to no more than the step (exclusive times) and name real kernels.
TEST(Train, ProfileWritesEachRanksBreakdownOfTheStepsAfterTheFirst) {
  fs::path dir = temp_dir("profile");
  train::Config cfg = tiny_gpt_config(write_corpus(dir), "f32");
  cfg.train.steps = 5;
  cfg.optim.warmup_steps = 1;
  cfg.train.eval_every = 0;
  train::RunOptions opt;
  opt.out_dir = (dir / "run").string();
  opt.plot = false;
  opt.console = stderr;
  opt.profile = true;
  train::run_training(cfg, opt);
  std::ifstream in(dir / "run" / "profile_rank0.txt");
  ASSERT_TRUE(in) << "no profile_rank0.txt";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("rank 0 of 1, steps 2-5 (4 profiled)"), std::string::npos) << text;
  for (const char* want : {"gemm", "attention", "optimizer", "untracked", "attention_forward",
                           "cross_entropy_backward"})
    EXPECT_NE(text.find(want), std::string::npos) << want << " missing from\n" << text;
  // The untracked rest of the step is what the families leave: not negative.
  const size_t u = text.find("untracked");
  ASSERT_NE(u, std::string::npos);
  EXPECT_GE(std::stod(text.substr(u + 9)), 0.0) << text;
  EXPECT_FALSE(prof::enabled());  // off again after the run
}

// RunOptions::fit_check runs on every rank before the model is built, with this machine's
// memory for a CPU run; a refusal stops the run with its message, before any weights exist.
TEST(Train, FitCheckSeesTheHostsMemoryAndItsRefusalStopsTheRun) {
  fs::path dir = temp_dir("fit_check");
  train::Config cfg = tiny_gpt_config(write_corpus(dir), "f32");
  cfg.train.steps = 2;
  cfg.optim.warmup_steps = 1;
  cfg.train.eval_every = 0;
  int calls = 0;
  double seen_capacity = 0;
  std::string seen_text;
  train::RunOptions opt;
  opt.out_dir = (dir / "fits").string();
  opt.plot = false;
  opt.console = stderr;
  opt.fit_check = [&](const train::Config& c, int world, double capacity, const std::string& text) {
    ++calls;
    EXPECT_EQ(world, 1);
    EXPECT_EQ(c, cfg);
    seen_capacity = capacity, seen_text = text;
    return std::string();
  };
  EXPECT_EQ(train::run_training(cfg, opt).steps, 2);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen_capacity, host_memory_bytes());
  EXPECT_NE(seen_text.find("GiB of host memory"), std::string::npos) << seen_text;

  opt.out_dir = (dir / "refused").string();
  opt.fit_check = [](const train::Config&, int, double, const std::string&) {
    return std::string("predicted not to fit: 9.99 GiB per rank");
  };
  tessera::testing::expect_error([&] { train::run_training(cfg, opt); },
                                 {"predicted not to fit: 9.99 GiB per rank"});
  EXPECT_FALSE(fs::exists(dir / "refused" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "refused" / "metrics.jsonl"));
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
  // bf16 autocast: MFU against the bf16 peak (AMX or AVX512-BF16 where oneDNN runs bf16 there).
  const DevicePeak cpu = cpu::gemm_datasheet_peak(2);
  for (const auto& r : read_metrics(dir / "bf16")) {
    EXPECT_DOUBLE_EQ(r["mfu_peak_tflops"].get<double>(), cpu.bf16.flops / 1e12) << r.dump();
    EXPECT_EQ(r["mfu_peak"], cpu.describe(DType::bf16));
  }
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
  for (const auto& r : m) {  // train.peak_tflops overrides the datasheet peak
    EXPECT_DOUBLE_EQ(r["mfu"].get<double>(), r["tflops_per_device"].get<double>() / 0.5);
    EXPECT_DOUBLE_EQ(r["mfu_peak_tflops"].get<double>(), 0.5);
    EXPECT_EQ(r["mfu_peak"], "train.peak_tflops");
  }
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
  const DeviceBackend* cuda = find_backend(DeviceType::cuda);
  if (cuda && cuda->device_count() > 0)
    GTEST_SKIP() << "a CUDA device is present (tests/cuda cover it)";
  fs::path dir = temp_dir("nogpu");
  train::Config c = tiny_gpt_config(write_corpus(dir), "bf16");
  c.train.device = "cuda";
  try {
    train_to(c, dir / "run");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("train.device = \"cuda\""), std::string::npos) << m;
    EXPECT_NE(m.find(cuda ? "no CUDA device" : "without the CUDA backend"), std::string::npos) << m;
  }
}

// A GPU's peak is its datasheet entry, found by the name the runtime reports; any other GPU has
// none, and the metrics record and the closing line say so rather than guess.
TEST(Train, MfuPeakOfAGpuIsItsDatasheetsOrNone) {
  static std::string name;
  DeviceBackend fake{};
  fake.describe = [](int) { return name; };
  register_backend(DeviceType::cuda, &fake);
  train::Config c = tiny_gpt_config("unused.txt", "bf16");
  name = "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)";
  const train::MfuPeak h100 = train::mfu_peak(c, Device::cuda(0), DType::bf16);
  const train::MfuPeak h100_f32 = train::mfu_peak(c, Device::cuda(0), DType::f32);
  name = "NVIDIA H100 PCIe (sm_90, 114 SMs, 79.1 GiB)";
  const train::MfuPeak pcie = train::mfu_peak(c, Device::cuda(0), DType::bf16);
  c.train.peak_tflops = 756;
  const train::MfuPeak given = train::mfu_peak(c, Device::cuda(0), DType::bf16);
  register_backend(DeviceType::cuda, nullptr);

  EXPECT_DOUBLE_EQ(h100.tflops, 989.5);
  EXPECT_EQ(h100.source, "H100 SXM5 80GB datasheet, bf16");
  EXPECT_DOUBLE_EQ(h100_f32.tflops, 67);  // f32 GEMMs are f32 on CUDA, never TF32
  EXPECT_EQ(pcie.tflops, 0);
  EXPECT_NE(pcie.source.find("no datasheet peak for 'NVIDIA H100 PCIe"), std::string::npos)
      << pcie.source;
  EXPECT_NE(pcie.source.find("train.peak_tflops"), std::string::npos) << pcie.source;
  EXPECT_DOUBLE_EQ(given.tflops, 756);
  EXPECT_EQ(given.source, "train.peak_tflops");

  train::StepResult r;
  r.step = 10, r.tflops = 407.7;
  const train::RankTiming::Report times;
  const train::SampleAccount::Digests digests;
  train::StepRecordParts parts;
  parts.rate_key = "tokens_per_s", parts.times = &times, parts.samples = &digests;
  parts.mfu_peak = h100;
  nlohmann::json rec = train::step_record(r, parts);
  EXPECT_DOUBLE_EQ(rec["mfu"].get<double>(), 407.7 / 989.5);
  EXPECT_DOUBLE_EQ(rec["mfu_peak_tflops"].get<double>(), 989.5);
  EXPECT_EQ(rec["mfu_peak"], "H100 SXM5 80GB datasheet, bf16");
  parts.mfu_peak = pcie;
  rec = train::step_record(r, parts);
  EXPECT_FALSE(rec.contains("mfu") || rec.contains("mfu_peak_tflops")) << rec.dump();
  EXPECT_EQ(rec["mfu_peak"], pcie.source);

  train::RunSummary sum;
  sum.tflops_per_device = 407.7;
  const std::string done = train::done_message(sum, "tokens/s", h100, false, 0);
  EXPECT_NE(done.find(", 408 TFLOP/s per device, MFU 41.2% of 989.5 TFLOP/s (H100 SXM5 80GB "
                      "datasheet, bf16)"),
            std::string::npos)
      << done;
  const std::string unknown = train::done_message(sum, "tokens/s", pcie, false, 0);
  EXPECT_NE(unknown.find(", no MFU (none: no datasheet peak for 'NVIDIA H100 PCIe"),
            std::string::npos)
      << unknown;
}
