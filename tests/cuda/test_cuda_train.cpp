// The trainer on a GPU (`train.device = "cuda"`), against the same job on the CPU: a tiny GPT on
// a generated corpus in f32, bf16 and fp16 (dynamic loss scaling), an MLP and a CNN on
// generated images in Fashion-MNIST's layout, and a checkpoint written on the GPU resumed on the
// GPU and on the CPU. Skipped without a device.
//
// Bounds: the two backends sum in different orders (cuBLASLt vs oneDNN, f64 reductions in other
// blocks), so losses agree to rounding at first and drift apart slowly under AdamW. f32: each of
// the first 5 losses within 1e-4 relative, the final validation loss within 1%. 16-bit compute: the
// final validation loss within 3% of the CPU f32 run (the CPU tests hold bf16 and fp16 to 2% of
// f32; the extra 1% is the cross-backend drift).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "cuda_test_util.h"
#include "data/idx.h"
#include "dist/local_comm.h"
#include "mpi/tiny_job.h"
#include "scratch.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  return tessera::testing::scratch_dir("cuda_train_" + name);
}

train::RunSummary run(const train::Config& cfg, const fs::path& out, std::string resume = "",
                      train::StepCallback on_step = nullptr) {
  train::RunOptions o;
  o.out_dir = out.string();
  o.plot = false;
  o.console = stderr;
  o.comm = std::make_shared<dist::LocalCommunicator>();
  o.resume = std::move(resume);
  o.handle_signals = true;
  o.on_step = std::move(on_step);
  return train::run_training(cfg, o);
}

train::Config gpt_job(const fs::path& corpus, const std::string& device,
                      const std::string& precision) {
  train::Config c = tessera::testing::tiny_gpt_job(corpus, 30);
  c.train.device = device;
  c.train.precision = precision;
  c.train.eval_every = 30;
  c.train.log_every = 1;
  return c;
}

double val_loss(const train::RunSummary& s) {
  return s.last_eval.at("val_loss").get<double>();
}

void cmp_line(const char* what, const char* dtype, double err, double bound) {
  std::printf("[cmp] %s | %s | %.3e | %.1e | %s\n", what, dtype, err, bound,
              err <= bound ? "PASS" : "FAIL");
}

// Images in Fashion-MNIST's file layout: uniform pixels, labels a function of the mean pixel
// of the top half (learnable, so the loss must fall).
fs::path write_images(const fs::path& dir) {
  Generator g(5);
  for (const auto& [prefix, n] : {std::pair<std::string, int64_t>{"train", 256}, {"t10k", 64}}) {
    std::vector<uint8_t> pixels(static_cast<size_t>(n * 28 * 28));
    std::vector<uint8_t> labels(static_cast<size_t>(n));
    const std::vector<float> u = Tensor::rand(Shape{n * 28 * 28}, g).to_vector();
    for (int64_t i = 0; i < n; ++i) {
      double top = 0;
      for (int64_t p = 0; p < 28 * 28; ++p) {
        const float v = u[size_t(i * 784 + p)];
        pixels[size_t(i * 784 + p)] = uint8_t(v * 255.f);
        if (p < 392) top += v;
      }
      labels[size_t(i)] = uint8_t(std::min(9.0, std::max(0.0, (top / 392 - 0.47) * 160)));
    }
    data::write_idx((dir / (prefix + "-images-idx3-ubyte")).string(), data::kIdxImagesMagic,
                    {n, 28, 28}, pixels, false);
    data::write_idx((dir / (prefix + "-labels-idx1-ubyte")).string(), data::kIdxLabelsMagic, {n},
                    labels, true);
  }
  return dir;
}

train::Config classifier_job(const fs::path& images, const std::string& kind,
                             const std::string& device) {
  train::Config c = train::parse_config(
      "[model]\nkind = \"" + kind +
          "\"\nmlp_hidden = 32\nmlp_layers = 2\ncnn_channels = 8\n"
          "[data]\nkind = \"fashion-mnist\"\npath = \"" +
          images.string() +
          "\"\n"
          "[optim]\nlr = 3e-3\nwarmup_steps = 2\n"
          "[train]\nsteps = 20\nbatch_size = 32\neval_every = 20\neval_batches = 2\n"
          "log_every = 1\nthreads = 2\n",
      "classifier.toml");
  c.train.device = device;
  return c;
}

// The run's console lines that contain `needle`, in order; the run's exception's text appended
// when it threw.
std::vector<std::string> console_lines(const train::Config& cfg, const fs::path& out,
                                       const std::string& needle) {
  const fs::path log = out.string() + ".log";
  fs::create_directories(out.parent_path());
  std::unique_ptr<FILE, int (*)(FILE*)> console(std::fopen(log.c_str(), "w"), &std::fclose);
  train::RunOptions o;
  o.out_dir = out.string();
  o.plot = false;
  o.console = console.get();
  o.comm = std::make_shared<dist::LocalCommunicator>();
  std::string error;
  try {
    train::run_training(cfg, o);
  } catch (const Error& e) {
    error = e.what();
  }
  console.reset();
  std::vector<std::string> lines;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) lines.push_back(line);
  if (!error.empty()) lines.push_back(error);
  return lines;
}

// console_lines of job c run on the CPU ([0]) and on the GPU ([1]), in dir/cpu and dir/gpu.
std::array<std::vector<std::string>, 2> cpu_and_gpu_lines(train::Config c, const fs::path& dir,
                                                          const std::string& needle) {
  std::array<std::vector<std::string>, 2> lines;
  for (int i = 0; i < 2; ++i) {
    c.train.device = i == 0 ? "cpu" : "cuda";
    lines[size_t(i)] = console_lines(c, dir / (i == 0 ? "cpu" : "gpu"), needle);
  }
  return lines;
}

class CudaTrain : public cudatest::CudaTest {};

}  // namespace

// fp16 from a loss scale of 2^26: the first steps overflow the f16 gradients and are skipped,
// the scale backing off each time. On the GPU the device decides each step (train/
// step_decider.h) and the host reads the verdicts only every 4 steps; the CPU decides each step
// on the host. The skipped steps, the scales in their messages and the losses must agree.
TEST_F(CudaTrain, Fp16OverflowsDecidedOnTheDeviceMatchTheCpu) {
  const fs::path dir = temp_dir("fp16_overflow");
  const fs::path corpus = tessera::testing::write_tiny_corpus(dir);
  train::Config c = gpt_job(corpus, "cpu", "fp16");
  c.train.steps = 12;
  c.train.log_every = 4;
  c.train.eval_every = 0;
  c.train.loss_scale = 67108864.0;  // 2^26
  c.train.micro_batches = 2;        // the device's seed: scale / 2
  const auto lines = cpu_and_gpu_lines(c, dir, "overflowed");
  std::printf(
      "[fp16] from a loss scale of 2^26: %zu of 12 steps overflowed on the CPU, %zu on "
      "the GPU\n",
      lines[0].size(), lines[1].size());
  ASSERT_GE(lines[0].size(), 2u) << "2^26 should overflow f16 more than once";
  ASSERT_LE(lines[0].size(), 8u) << "the later steps should be applied at a lower scale";
  EXPECT_EQ(lines[1], lines[0]);
}

// A learning rate of 1e30 makes every loss after the first step non-finite. With
// train.max_bad_steps = 3 the CPU stops at step 4, naming steps 2 to 4; the GPU, whose device
// decides the steps and whose host reads the verdicts every 8 steps, must stop with the same
// error and the same messages before it.
TEST_F(CudaTrain, BadStepsDecidedOnTheDeviceStopTheRunAsOnTheCpu) {
  const fs::path dir = temp_dir("bad_steps");
  const fs::path corpus = tessera::testing::write_tiny_corpus(dir);
  train::Config c = gpt_job(corpus, "cpu", "f32");
  c.train.steps = 12;
  c.train.log_every = 8;
  c.train.eval_every = 0;
  c.train.max_bad_steps = 3;
  c.optim.lr = 1e30;
  c.optim.warmup_steps = 0;
  const auto lines = cpu_and_gpu_lines(c, dir, "step");
  ASSERT_FALSE(lines[0].empty());
  EXPECT_NE(lines[0].back().find("3 steps in a row"), std::string::npos) << lines[0].back();
  // Each skipped step's number and count in a row, then the error up to its advice (the loss
  // and norm printed may be inf on one backend and NaN on the other).
  std::vector<std::string> skipped[2];
  for (int i = 0; i < 2; ++i)
    for (const std::string& l : lines[size_t(i)]) {
      const size_t row = l.find(" in a row"), colon = l.find(':');
      if (l.find("skipped") != std::string::npos && row != std::string::npos)
        skipped[i].push_back(l.substr(0, colon) + " " + l.substr(l.rfind('(', row)));
      else if (l.find("stopping") != std::string::npos)
        skipped[i].push_back(l.substr(l.find("train:"), l.find("stopping") - l.find("train:")));
    }
  ASSERT_EQ(skipped[0].size(), 4u);  // steps 2, 3, 4 and the error
  EXPECT_EQ(skipped[1], skipped[0]);
}

TEST_F(CudaTrain, GPTF32MatchesTheCpu) {
  const fs::path dir = temp_dir("f32");
  const fs::path corpus = tessera::testing::write_tiny_corpus(dir);
  const train::RunSummary cpu = run(gpt_job(corpus, "cpu", "f32"), dir / "cpu");
  const train::RunSummary gpu = run(gpt_job(corpus, "cuda", "f32"), dir / "gpu");
  ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
  double first = 0;
  for (size_t i = 0; i < 5; ++i)
    first = std::max(first, std::fabs(gpu.losses[i] - cpu.losses[i]) / cpu.losses[i]);
  cmp_line("train gpt: first 5 losses", "f32", first, 1e-4);
  EXPECT_LE(first, 1e-4);
  const double v = std::fabs(val_loss(gpu) - val_loss(cpu)) / val_loss(cpu);
  cmp_line("train gpt: final val_loss", "f32", v, 1e-2);
  EXPECT_LE(v, 1e-2) << "cpu " << val_loss(cpu) << " gpu " << val_loss(gpu);
  EXPECT_LT(gpu.final_loss, gpu.losses[0] - 1.0);  // it learned
  // The final weights were written from the device.
  EXPECT_TRUE(fs::exists(dir / "gpu" / "model.safetensors"));
}

TEST_F(CudaTrain, GPT16BitPrecisionsTrackTheCpuF32Run) {
  const fs::path dir = temp_dir("16bit");
  const fs::path corpus = tessera::testing::write_tiny_corpus(dir);
  const train::RunSummary ref = run(gpt_job(corpus, "cpu", "f32"), dir / "cpu");
  for (const char* p : {"bf16", "fp16"}) {
    const train::RunSummary gpu = run(gpt_job(corpus, "cuda", p), dir / p);
    const double v = std::fabs(val_loss(gpu) - val_loss(ref)) / val_loss(ref);
    cmp_line("train gpt: final val_loss vs cpu f32", p, v, 3e-2);
    EXPECT_LE(v, 3e-2) << p << ": cpu f32 " << val_loss(ref) << " gpu " << val_loss(gpu);
    EXPECT_EQ(gpu.bad_steps, 0) << p;
  }
}

// On the GPU every kernel sums in a fixed order (the embedding backward too: positions grouped
// by id, no atomics) and cuBLASLt is deterministic for one GPU and library version, so resuming
// on the GPU repeats the uninterrupted run bit for bit: the same losses and the same final
// weights file. On the CPU the sums run in other orders: close, not equal. The device decides
// each step and the host reads its verdicts at logged and checkpointed steps (every 5th and
// 3rd here): when it reads them must not change the run, so logging every step gives the same
// weights.
TEST_F(CudaTrain, CheckpointFromTheGpuResumesOnTheGpuAndOnTheCpu) {
  const fs::path dir = temp_dir("ckpt");
  const fs::path corpus = tessera::testing::write_tiny_corpus(dir);
  train::Config c = gpt_job(corpus, "cuda", "f32");
  c.train.steps = 8;
  c.train.checkpoint_every = 3;
  c.train.checkpoint_async = 0;
  c.train.log_every = 5;
  const train::RunSummary full = run(c, dir / "full");
  ASSERT_EQ(full.checkpoints_saved, 3);
  const std::string full_weights =
      read_small_file((dir / "full" / "model.safetensors").string(), 1 << 30);
  train::Config every = c;
  every.train.log_every = 1;
  every.train.checkpoint_every = 0;
  const train::RunSummary logged = run(every, dir / "logged");
  EXPECT_EQ(logged.losses, full.losses);
  EXPECT_TRUE(read_small_file((dir / "logged" / "model.safetensors").string(), 1 << 30) ==
              full_weights)
      << "reading the verdicts every step changed the run";
  for (const char* device : {"cuda", "cpu"}) {
    const bool gpu = device[1] == 'u';
    const fs::path out = dir / device;
    fs::copy(dir / "full", out, fs::copy_options::recursive);
    fs::remove(out / "model.safetensors");  // the resumed run must write its own
    train::Config r = c;
    r.train.device = device;  // a resumable key: a GPU run may continue on the CPU
    const train::RunSummary b = run(r, out, (out / "checkpoints" / "step_00000006").string());
    ASSERT_EQ(b.start_step, 6);
    ASSERT_EQ(b.losses.size(), 2u);
    double err = 0;
    for (size_t i = 0; i < 2; ++i)
      err = std::max(err, std::fabs(b.losses[i] - full.losses[6 + i]) / full.losses[6 + i]);
    cmp_line(gpu ? "resume gpu checkpoint on gpu (bit-exact)" : "resume gpu checkpoint on cpu",
             "f32", err, gpu ? 0.0 : 1e-4);
    if (gpu) {
      for (size_t i = 0; i < 2; ++i) EXPECT_EQ(b.losses[i], full.losses[6 + i]) << "step " << 7 + i;
      ASSERT_TRUE(fs::exists(out / "model.safetensors"));
      EXPECT_TRUE(read_small_file((out / "model.safetensors").string(), 1 << 30) == full_weights)
          << "the final weights of the run resumed on the GPU differ from the uninterrupted run's";
    } else {
      EXPECT_LE(err, 1e-4) << device;
    }
  }
}

TEST_F(CudaTrain, ClassifiersMatchTheCpu) {
  const fs::path dir = temp_dir("classifiers");
  const fs::path images = write_images(dir);
  for (const char* kind : {"mlp", "cnn"}) {
    const train::RunSummary cpu = run(classifier_job(images, kind, "cpu"), dir / kind / "cpu");
    const train::RunSummary gpu = run(classifier_job(images, kind, "cuda"), dir / kind / "gpu");
    const double first = std::fabs(gpu.losses[0] - cpu.losses[0]) / cpu.losses[0];
    cmp_line(kind[0] == 'm' ? "train mlp: first loss" : "train cnn: first loss", "f32", first,
             1e-4);
    EXPECT_LE(first, 1e-4) << kind;
    const double acc_cpu = cpu.last_eval.at("test_accuracy").get<double>();
    const double acc_gpu = gpu.last_eval.at("test_accuracy").get<double>();
    // 64 test images: a few may flip between backends after 20 steps of drift.
    EXPECT_NEAR(acc_gpu, acc_cpu, 4.0 / 64) << kind;
    EXPECT_LT(gpu.final_loss, gpu.losses[0]) << kind;
  }
}
