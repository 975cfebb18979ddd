// model.init_weights: training starts from a weights file in any of the three formats
// nn::load_any_weights detects (a Tessera run's model.safetensors, Hugging Face GPT-2
// safetensors, an llm.c checkpoint), for the GPT and the classifier tasks; a resume ignores it;
// bad files are errors naming the key and the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "autograd/grad_mode.h"
#include "gradcheck.h"
#include "mpi/tiny_job.h"
#include "nn/classifiers.h"
#include "nn/llmc_import.h"
#include "nn/weights.h"
#include "scratch.h"
#include "train/task.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::expect_error;

namespace {

fs::path temp_dir(const std::string& name) {
  return tessera::testing::scratch_dir("init_weights_" + name);
}

train::RunSummary train_to(const train::Config& cfg, const fs::path& out,
                           const std::string& resume = "") {
  train::RunOptions opt;
  opt.out_dir = out.string();
  opt.plot = false;
  opt.console = stderr;
  opt.resume = resume;
  return train::run_training(cfg, opt);
}

// The GPT of tiny_gpt_job (2 layers, 2 heads, width 32, context 16, bytes), or another width.
nn::GPT tiny_gpt(uint64_t seed, int64_t n_embd = 32) {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = n_embd, c.context = 16, c.vocab_size = 256;
  Generator g(seed);
  return nn::GPT(c, g);
}

// The loss the trainer's first step computes for `cfg`, with the model's weights taken from
// `weights` by the Tessera loader instead of the task (so the check does not go through
// model.init_weights). One micro-batch, f32, no dropout: the step's loss is this one forward.
double first_step_loss(train::Config cfg, const std::string& weights) {
  cfg.model.init_weights = "";
  std::unique_ptr<train::Task> task = train::make_task(cfg);
  nn::load_weights(task->model(), weights);
  task->next_batch();
  return double(task->micro_loss(0, 1).item());
}

void expect_same_parameters(nn::Module& a, const nn::Module& b) {
  const nn::NamedTensors pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_EQ(pa[i].second.to_vector(), pb[i].second.to_vector()) << pa[i].first;
  }
}

}  // namespace

// Run B starts from run A's final weights: its first loss is A's weights' loss on B's first
// batch, bit for bit (same batch, same single-thread kernels; a seed-initialised model would
// give a different value), and well below the first loss of a run from the seed (~ln 256).
// Resuming B from its checkpoint with model.init_weights changed is allowed and the
// checkpoint's weights win: the later losses equal the uninterrupted run's.
TEST(InitWeights, GPTStartsFromAPreviousRunAndAResumeIgnoresTheKey) {
  const fs::path dir = temp_dir("gpt");
  const train::Config a = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir),
                                                         /*steps=*/30);
  const train::RunSummary ra = train_to(a, dir / "a");
  const std::string a_weights = (dir / "a" / "model.safetensors").string();

  train::Config b = a;
  b.train.steps = 4;
  b.train.checkpoint_every = 2;
  b.train.checkpoint_keep = 3;
  b.model.init_weights = a_weights;
  const train::RunSummary rb = train_to(b, dir / "b");
  ASSERT_EQ(rb.losses.size(), 4u);
  EXPECT_EQ(rb.losses[0], first_step_loss(b, a_weights));
  EXPECT_LT(rb.losses[0], ra.losses[0] - 1.0) << "from scratch " << ra.losses[0];
  // The saved config keeps the key (a resume compares it) and reads back equal.
  EXPECT_EQ(train::load_config(dir / "b" / "config.toml"), b);

  // Another valid file of the same shapes: if it were loaded over the checkpoint, step 3 differs.
  const std::string other = (dir / "other.bin").string();
  nn::export_llmc_checkpoint(tiny_gpt(99), other);
  train::Config resumed = b;
  resumed.model.init_weights = other;
  const train::RunSummary rr =
      train_to(resumed, dir / "b", (dir / "b" / "checkpoints" / "step_00000002").string());
  EXPECT_EQ(rr.start_step, 2);
  ASSERT_EQ(rr.losses.size(), 2u);
  EXPECT_EQ(rr.losses[0], rb.losses[2]);
  EXPECT_EQ(rr.losses[1], rb.losses[3]);
  // A resume does not even read the file: one deleted since the run started is no error.
  resumed.model.init_weights = (dir / "deleted.bin").string();
  const train::RunSummary rd =
      train_to(resumed, dir / "b", (dir / "b" / "checkpoints" / "step_00000002").string());
  ASSERT_EQ(rd.losses.size(), 2u);
  EXPECT_EQ(rd.losses[1], rb.losses[3]);
  fs::remove_all(dir);
}

// Hugging Face's layout (Conv1D weights [in, out]), with and without its extras (the
// "transformer." prefix, the attn.bias masks, lm_head.weight): without them the names equal
// ours and only the c_attn layout tells the formats apart.
TEST(InitWeights, HuggingFaceGPT2SafetensorsAreDetectedAndLoaded) {
  const fs::path dir = temp_dir("hf");
  train::Config cfg = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 4);
  const nn::GPT src = tiny_gpt(3);
  auto conv1d = [](const std::string& n) {
    for (const std::string s : {".c_attn.weight", ".c_proj.weight", ".c_fc.weight"})
      if (n.size() > s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0) return true;
    return false;
  };
  for (const bool extras : {false, true}) {
    SCOPED_TRACE(extras ? "with extras" : "bare");
    const std::string prefix = extras ? "transformer." : "";
    nn::NamedTensors hf;
    for (auto& [name, t] : src.named_parameters())
      hf.emplace_back(prefix + name, conv1d(name) ? t.transpose_view(0, 1).contiguous() : t);
    if (extras) {
      for (int i = 0; i < 2; ++i)
        hf.emplace_back(prefix + "h." + std::to_string(i) + ".attn.bias",
                        Tensor::ones(Shape{1, 1, 16, 16}));
      hf.emplace_back("lm_head.weight", src.wte.weight);
    }
    const std::string path = (dir / "hf.safetensors").string();
    nn::write_safetensors(path, hf);
    nn::GPT direct = tiny_gpt(4);
    EXPECT_EQ(nn::load_any_weights(direct, path), nn::WeightsFormat::hf_gpt2);
    expect_same_parameters(direct, src);

    cfg.model.init_weights = path;
    std::unique_ptr<train::Task> task = train::make_task(cfg);
    expect_same_parameters(task->model(), src);
  }
  fs::remove_all(dir);
}

// llm.c checkpoints: f32 loads exactly; bf16 loads as the bf16 rounding of the weights.
TEST(InitWeights, LlmcCheckpointsAreDetectedAndLoaded) {
  const fs::path dir = temp_dir("llmc");
  train::Config cfg = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 4);
  const nn::GPT src = tiny_gpt(5);
  const std::string path = (dir / "gpt2_tiny.bin").string();
  nn::export_llmc_checkpoint(src, path);
  nn::GPT direct = tiny_gpt(6);
  EXPECT_EQ(nn::load_any_weights(direct, path), nn::WeightsFormat::llmc);
  cfg.model.init_weights = path;
  expect_same_parameters(train::make_task(cfg)->model(), src);

  nn::export_llmc_checkpoint(src, path, DType::bf16);
  nn::GPT rounded = tiny_gpt(7);
  {
    NoGradGuard ng;
    const nn::NamedTensors from = src.named_parameters();
    nn::NamedTensors to = rounded.named_parameters();
    for (size_t i = 0; i < from.size(); ++i)
      to[i].second.copy_from(from[i].second.to(DType::bf16).to(DType::f32));
  }
  expect_same_parameters(train::make_task(cfg)->model(), rounded);

  // A run's own model.safetensors is detected as ours.
  const std::string ours = (dir / "model.safetensors").string();
  nn::save_weights(src, ours);
  EXPECT_EQ(nn::load_any_weights(direct, ours), nn::WeightsFormat::tessera);
  expect_same_parameters(direct, src);
  fs::remove_all(dir);
}

TEST(InitWeights, BadFilesNameTheKeyTheFileAndTheProblem) {
  const fs::path dir = temp_dir("bad");
  train::Config cfg = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 4);
  auto expect_task_error = [&](const std::string& path, std::initializer_list<std::string> what) {
    cfg.model.init_weights = path;
    SCOPED_TRACE(path);
    expect_error([&] { train_to(cfg, dir / "run"); }, what);
  };
  const std::string key = "config: model.init_weights = '";
  const std::string missing = (dir / "no_such.safetensors").string();
  expect_task_error(missing, {key + missing + "'", "does not exist"});

  // Width 48 where the config says 32, in both formats.
  const nn::GPT wide = tiny_gpt(8, 48);
  const std::string wide_st = (dir / "wide.safetensors").string();
  nn::save_weights(wide, wide_st);
  expect_task_error(
      wide_st, {key + wide_st + "'", "wrong shape", "wpe.weight (file [16, 48], model [16, 32])"});
  const std::string wide_bin = (dir / "wide.bin").string();
  nn::export_llmc_checkpoint(wide, wide_bin);
  expect_task_error(wide_bin, {key + wide_bin + "'", "C 48", "model has 2 2 32"});

  // Neither format: the safetensors parser's reason is kept.
  const std::string text = (dir / "notes.txt").string();
  std::ofstream(text) << "these are not weights, just some text long enough for a header";
  expect_task_error(
      text, {key + text + "'", "neither an llm.c checkpoint", "nor a valid safetensors file"});

  // A GPT's files for a classifier.
  nn::MLPClassifierConfig mc;
  mc.hidden = 8;
  Generator g(1);
  nn::MLPClassifier mlp(mc, g);
  expect_error([&] { nn::load_any_weights(mlp, wide_bin); }, {wide_bin, "not a GPT"});
  expect_error([&] { nn::load_any_weights(mlp, wide_st); }, {wide_st, "missing [layers.0.weight"});
  fs::remove_all(dir);
}

// The classifier task: an MLP on images in Fashion-MNIST's file layout, run B from run A's
// weights, checked like the GPT (bit-exact first loss, below the first loss from the seed).
TEST(InitWeights, ClassifierStartsFromAPreviousRun) {
  const fs::path dir = temp_dir("mlp");
  tessera::testing::write_tiny_images(dir);
  const train::Config a = train::parse_config(
      "[model]\nkind = \"mlp\"\nmlp_hidden = 16\nmlp_layers = 2\n"
      "[data]\nkind = \"fashion-mnist\"\npath = \"" +
          dir.string() +
          "\"\n"
          "[optim]\nlr = 1e-2\nwarmup_steps = 2\n"
          "[train]\nsteps = 30\nbatch_size = 16\neval_every = 0\nlog_every = 100\nthreads = 1\n",
      "classifier.toml");
  const train::RunSummary ra = train_to(a, dir / "a");
  const std::string a_weights = (dir / "a" / "model.safetensors").string();
  train::Config b = a;
  b.train.steps = 4;
  b.model.init_weights = a_weights;
  const train::RunSummary rb = train_to(b, dir / "b");
  ASSERT_EQ(rb.losses.size(), 4u);
  EXPECT_EQ(rb.losses[0], first_step_loss(b, a_weights));
  // 96 random images memorised for 30 steps: the loss is far below ln 10 = 2.3.
  EXPECT_LT(rb.losses[0], ra.losses[0] - 0.5) << "from scratch " << ra.losses[0];
  fs::remove_all(dir);
}
