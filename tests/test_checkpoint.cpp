// Checkpoints through the trainer, in one process (f32, CPU, a tiny GPT with dropout on):
//  - a run stopped by SIGTERM saves a checkpoint; resuming it gives every later loss and the
//    final weights bit for bit equal to an uninterrupted run; so does resuming a periodic
//    (background-written) checkpoint, and one saved under another ZeRO stage;
//  - a truncated file, a flipped byte, a manifest that lies and a changed config are each
//    refused naming the file and the problem, and --resume latest falls back to the newest
//    checkpoint that verifies;
//  - a file-size limit hit during a save (RLIMIT_FSIZE in a child process, as a full disk)
//    fails that save cleanly and leaves the previous checkpoint loadable;
//  - non-finite steps are skipped and counted, and K in a row stop the run.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "ckpt/checkpoint.h"
#include "ckpt/signals.h"
#include "core/file_io.h"
#include "dist/local_comm.h"
#include "gradcheck.h"
#include "mpi/tiny_job.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::expect_error;

namespace {

std::string temp_prefix() {
  return "tessera_test_ckpt_" + std::to_string(::getpid()) + "_";
}

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / (temp_prefix() + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// The tiny GPT job with dropout (so the dropout stream must be restored) and checkpoints.
train::Config job(const fs::path& corpus, int64_t steps = 8) {
  train::Config c = tessera::testing::tiny_gpt_job(corpus, steps);
  c.model.dropout = 0.1;
  c.train.checkpoint_every = 3;
  c.train.checkpoint_keep = 3;
  c.train.log_every = 1;
  return c;
}

train::RunSummary run(const train::Config& cfg, const fs::path& out, std::string resume = "",
                      train::StepCallback on_step = nullptr, FILE* console = nullptr) {
  train::RunOptions o;
  o.out_dir = out.string();
  o.plot = false;
  o.console = console ? console : std::fopen("/dev/null", "w");
  o.comm = std::make_shared<dist::LocalCommunicator>();
  o.resume = std::move(resume);
  o.handle_signals = true;
  o.on_step = std::move(on_step);
  train::RunSummary s = train::run_training(cfg, o);
  if (!console) std::fclose(o.console);
  return s;
}

std::string bytes_of(const fs::path& p) {
  return read_small_file(p.string(), 1 << 30);
}

void expect_same_losses(const std::vector<double>& full, const train::RunSummary& resumed) {
  ASSERT_EQ(resumed.losses.size(), full.size() - size_t(resumed.start_step));
  for (size_t i = 0; i < resumed.losses.size(); ++i)
    EXPECT_EQ(resumed.losses[i], full[size_t(resumed.start_step) + i])
        << "step " << resumed.start_step + int64_t(i) + 1;
}

// One uninterrupted reference run per test binary.
struct Reference {
  fs::path dir, corpus;
  train::RunSummary sum;
  std::string weights;
};
const Reference& reference() {
  static Reference r = [] {
    Reference x;
    x.dir = temp_dir("reference");
    x.corpus = tessera::testing::write_tiny_corpus(x.dir);
    x.sum = run(job(x.corpus), x.dir / "run");
    x.weights = bytes_of(x.dir / "run" / "model.safetensors");
    return x;
  }();
  return r;
}

// metrics.jsonl of a run folder, one record per line.
std::vector<nlohmann::json> metrics_of(const fs::path& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream m(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(m, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

void flip_byte(const fs::path& p, uint64_t at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(at));
  char c = 0;
  f.read(&c, 1);
  c = char(c ^ 0x40);
  f.seekp(std::streamoff(at));
  f.write(&c, 1);
}

// Removes this process's temporary folders at exit.
class TempCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(fs::temp_directory_path(), ec))
      if (e.path().filename().string().rfind(temp_prefix(), 0) == 0) fs::remove_all(e.path(), ec);
  }
};
const auto* const g_cleanup = ::testing::AddGlobalTestEnvironment(new TempCleanup);

}  // namespace

// A scheduler may deliver one stop request twice (Slurm signals each process of a job step):
// a repeat within ckpt::kDuplicateWindowMs keeps the process alive and stopping at its
// checkpoint; a repeat after it is a second request, which ends the process at once. In a child,
// whose death by SIGTERM is the assertion.
TEST(StopSignals, ARepeatWithinTheWindowIsOneRequestAndALaterOneEndsTheProcess) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ckpt::StopSignals signals;
    ::raise(SIGTERM);
    ::raise(SIGTERM);  // a duplicate: still here
    if (ckpt::stop_requested() != SIGTERM) ::_exit(3);
    ::usleep(useconds_t(ckpt::kDuplicateWindowMs + 200) * 1000);
    ::raise(SIGTERM);  // a second request: ends the process
    ::_exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_FALSE(WIFEXITED(status)) << "the child exited with " << WEXITSTATUS(status)
                                  << " (3: the duplicate ended or reset the request; 4: the "
                                     "later repeat did not end the process)";
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST(Checkpoint, SigtermSavesAndResumeIsBitExact) {
  const Reference& ref = reference();
  ASSERT_EQ(ref.sum.checkpoints_saved, 3);  // steps 3, 6 and the last, 8
  const fs::path out = temp_dir("sigterm") / "run";
  // SIGTERM arrives during step 4 (raised from the step callback, through the real handler).
  train::RunSummary a = run(job(ref.corpus), out, "", [](int64_t step, double, auto&) {
    if (step == 4) ::raise(SIGTERM);
  });
  EXPECT_TRUE(a.interrupted);
  EXPECT_EQ(a.stop_signal, SIGTERM);
  EXPECT_EQ(a.steps, 4);
  EXPECT_EQ(fs::path(a.last_checkpoint).filename(), "step_00000004");
  EXPECT_FALSE(fs::exists(out / "model.safetensors")) << "an interrupted run has no final weights";

  train::RunSummary b = run(job(ref.corpus), out, "latest");
  EXPECT_FALSE(b.interrupted);
  EXPECT_EQ(b.start_step, 4);
  expect_same_losses(ref.sum.losses, b);
  EXPECT_TRUE(bytes_of(out / "model.safetensors") == ref.weights) << "final weights differ";
  // metrics.jsonl: steps 1..8 once each, the resumed ones equal to the reference's.
  std::ifstream m(out / "metrics.jsonl");
  std::string line;
  int64_t expect_step = 1;
  while (std::getline(m, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["step"].get<int64_t>(), expect_step);
    EXPECT_EQ(j["loss"].get<double>(), ref.sum.losses[size_t(expect_step - 1)]);
    ++expect_step;
  }
  EXPECT_EQ(expect_step, 9);
  // Sample accounting: the resumed steps drew exactly the reference's samples (the run digest
  // continues from the checkpoint's and ends equal).
  ASSERT_TRUE(ref.sum.samples_digest.has_value());
  EXPECT_EQ(b.samples_digest, ref.sum.samples_digest);
  const std::vector<nlohmann::json> mine = metrics_of(out), theirs = metrics_of(ref.dir / "run");
  ASSERT_EQ(mine.size(), theirs.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_EQ(mine[i]["samples_hash"], theirs[i]["samples_hash"]) << "step " << i + 1;
    EXPECT_EQ(mine[i]["samples_hash_run"], theirs[i]["samples_hash_run"]) << "step " << i + 1;
  }
}

TEST(Checkpoint, SampleDigestsIgnoreMicroBatchingAndFollowTheData) {
  const Reference& ref = reference();
  const std::vector<nlohmann::json> theirs = metrics_of(ref.dir / "run");
  // Four micro-batches: the same rows each step, cut differently.
  train::Config micro = job(ref.corpus);
  micro.train.micro_batches = 4;
  const fs::path out = temp_dir("samples_micro") / "run";
  const train::RunSummary m = run(micro, out);
  EXPECT_EQ(m.samples_digest, ref.sum.samples_digest);
  const std::vector<nlohmann::json> mine = metrics_of(out);
  ASSERT_EQ(mine.size(), theirs.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    ASSERT_TRUE(mine[i]["samples_hash"].is_string()) << mine[i].dump();
    ASSERT_EQ(mine[i]["rank_compute_ms_p50"].size(), 1u) << mine[i].dump();  // one rank
    EXPECT_EQ(mine[i]["samples_hash"], theirs[i]["samples_hash"]) << "step " << i + 1;
    EXPECT_EQ(mine[i]["samples_hash_run"], theirs[i]["samples_hash_run"]) << "step " << i + 1;
  }
  // Stopped in the middle of a step (SIGTERM once its micro-batches' backward is queued, before
  // the gradients are combined): the step completes, its checkpoint is saved, and the resumed
  // run draws the same samples from there on.
  {
    const fs::path stopped = temp_dir("samples_mid_step") / "run";
    train::RunOptions o;
    o.out_dir = stopped.string();
    o.plot = false;
    o.console = std::fopen("/dev/null", "w");
    o.comm = std::make_shared<dist::LocalCommunicator>();
    o.handle_signals = true;
    o.before_gradient_sync = [](int64_t step) {
      if (step == 4) ::raise(SIGTERM);  // 0-based: during the 5th step
    };
    const train::RunSummary a = train::run_training(micro, o);
    std::fclose(o.console);
    ASSERT_TRUE(a.interrupted);
    EXPECT_EQ(a.steps, 5);
    const train::RunSummary b = run(micro, stopped, "latest");
    EXPECT_EQ(b.start_step, 5);
    EXPECT_EQ(b.samples_digest, ref.sum.samples_digest);
  }
  // Every step draws new windows; another data seed draws others.
  for (size_t i = 1; i < theirs.size(); ++i)
    EXPECT_NE(theirs[i]["samples_hash"], theirs[i - 1]["samples_hash"]) << "step " << i + 1;
  train::Config other = job(ref.corpus);
  other.train.seed += 1;
  const train::RunSummary o = run(other, temp_dir("samples_seed") / "run");
  EXPECT_NE(o.samples_digest, ref.sum.samples_digest);
}

TEST(Checkpoint, FP16LossScalerStateResumesBitExact) {
  const Reference& ref = reference();  // for its corpus
  train::Config c = job(ref.corpus);
  c.train.precision = "fp16";
  c.train.loss_scale = std::ldexp(1.0, 22);  // overflows fp16 at first: skips before step 4,
  c.train.loss_scale_window = 2;             // and grows again after two clean steps
  const fs::path full = temp_dir("fp16_full") / "run";
  const train::RunSummary f = run(c, full);
  ASSERT_GT(f.loss_scale_skipped, 0) << "the test needs overflow skips";
  ASSERT_LT(f.loss_scale_skipped, 6) << "the test needs steps that train";
  const fs::path out = temp_dir("fp16_resume") / "run";
  train::RunSummary a = run(c, out, "", [](int64_t step, double, auto&) {
    if (step == 4) ::raise(SIGTERM);
  });
  ASSERT_TRUE(a.interrupted);
  // The resumed run continues from the saved scale, clean-step count and skip count: without
  // them it would restart at 2^22, overflow again and diverge from the uninterrupted run.
  const train::RunSummary b = run(c, out, "latest");
  EXPECT_EQ(b.start_step, 4);
  expect_same_losses(f.losses, b);
  EXPECT_EQ(b.loss_scale, f.loss_scale);
  EXPECT_EQ(b.loss_scale_skipped, f.loss_scale_skipped);
  EXPECT_TRUE(bytes_of(out / "model.safetensors") == bytes_of(full / "model.safetensors"));
}

TEST(Checkpoint, BackgroundPeriodicCheckpointResumesBitExactAndKeepsTheNewestK) {
  const Reference& ref = reference();
  const fs::path src = ref.dir / "run";
  std::vector<int64_t> steps;
  for (const auto& [s, p] : ckpt::list_checkpoints(src.string())) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{3, 6, 8}));
  // Resume a copy from step 3 (written on the background thread while step 4 trained).
  const fs::path out = temp_dir("periodic") / "run";
  fs::copy(src, out, fs::copy_options::recursive);
  const std::string step3 = ckpt::checkpoint_dir(out.string(), 3);
  train::RunSummary b = run(job(ref.corpus), out, step3);
  EXPECT_EQ(b.start_step, 3);
  expect_same_losses(ref.sum.losses, b);
  EXPECT_TRUE(bytes_of(out / "model.safetensors") == ref.weights);
  // keep = 2 after saves at 6 and 8 from this resumed life: 3 is pruned.
  steps.clear();
  for (const auto& [s, p] : ckpt::list_checkpoints(out.string())) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{3, 6, 8}));
  train::Config two = job(ref.corpus);
  two.train.checkpoint_keep = 2;
  run(two, out, step3);
  steps.clear();
  for (const auto& [s, p] : ckpt::list_checkpoints(out.string())) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{6, 8}));
}

TEST(Checkpoint, StateSavedUnderOneZeroStageResumesUnderAnother) {
  const Reference& ref = reference();
  // Saved by stage 0 (the reference, step 6), resumed under stages 1 and 3 on one rank: the
  // sharded optimizer's update is the flat one's, so the continuation is bit for bit the same.
  for (int stage : {1, 3}) {
    const fs::path out = temp_dir("stage" + std::to_string(stage)) / "run";
    fs::copy(ref.dir / "run", out, fs::copy_options::recursive);
    train::Config c = job(ref.corpus);
    c.parallel.zero_stage = stage;
    train::RunSummary b = run(c, out, ckpt::checkpoint_dir(out.string(), 6));
    EXPECT_EQ(b.start_step, 6);
    expect_same_losses(ref.sum.losses, b);
    EXPECT_TRUE(bytes_of(out / "model.safetensors") == ref.weights) << "stage " << stage;
  }
}

TEST(Checkpoint, DamagedCheckpointsAreRefusedAndLatestFallsBack) {
  const Reference& ref = reference();
  const fs::path out = temp_dir("damaged") / "run";
  fs::copy(ref.dir / "run", out, fs::copy_options::recursive);
  const train::Config cfg = job(ref.corpus);
  const std::string c8 = ckpt::checkpoint_dir(out.string(), 8);
  const std::string c6 = ckpt::checkpoint_dir(out.string(), 6);
  const std::string c3 = ckpt::checkpoint_dir(out.string(), 3);

  // A truncated file.
  const fs::path opt8 = fs::path(c8) / "optimizer_rank0.safetensors";
  const uint64_t full = fs::file_size(opt8);
  fs::resize_file(opt8, full - 100);
  expect_error([&] { ckpt::verify_checkpoint(c8, &cfg); },
               {opt8.string(), std::to_string(full - 100) + " bytes", std::to_string(full)});
  // A flipped byte.
  const fs::path model6 = fs::path(c6) / "model.safetensors";
  flip_byte(model6, fs::file_size(model6) / 2);
  expect_error([&] { ckpt::verify_checkpoint(c6, &cfg); }, {model6.string(), "CRC-32", "corrupt"});

  // --resume latest skips both and continues from step 3, exactly.
  std::string log_path = (out.parent_path() / "console.txt").string();
  FILE* console = std::fopen(log_path.c_str(), "w");
  train::RunSummary b = run(cfg, out, "latest", nullptr, console);
  std::fclose(console);
  EXPECT_EQ(b.start_step, 3);
  expect_same_losses(ref.sum.losses, b);
  const std::string log = bytes_of(log_path);
  EXPECT_NE(log.find("skipping a checkpoint that does not verify"), std::string::npos) << log;
  EXPECT_NE(log.find(opt8.string()), std::string::npos) << log;
  EXPECT_NE(log.find(model6.string()), std::string::npos) << log;

  // A manifest that lies: it lists a file that is not there, or a step the state does not have.
  const fs::path manifest3 = fs::path(c3) / "manifest.json";
  fs::copy(ref.dir / "run" / "checkpoints" / "step_00000003", c3,
           fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  const std::string good = bytes_of(manifest3);
  ckpt::Manifest m = ckpt::parse_manifest(good, manifest3.string());
  m.files.push_back({"extra.bin", 10, 0});
  write_file_atomically(manifest3.string(), ckpt::manifest_to_json(m));
  expect_error([&] { ckpt::verify_checkpoint(c3, &cfg); },
               {(fs::path(c3) / "extra.bin").string(), "missing"});
  m = ckpt::parse_manifest(good, manifest3.string());
  m.step = 5;
  write_file_atomically(manifest3.string(), ckpt::manifest_to_json(m));
  expect_error([&] { ckpt::verify_checkpoint(c3, &cfg); },
               {"trainer_state.json", "step 3", "manifest.json says step 5"});
  m = ckpt::parse_manifest(good, manifest3.string());
  std::erase_if(m.files, [](const ckpt::FileEntry& f) { return f.name == "trainer_state.json"; });
  write_file_atomically(manifest3.string(), ckpt::manifest_to_json(m));
  expect_error([&] { ckpt::verify_checkpoint(c3, &cfg); },
               {manifest3.string(), "does not list 'trainer_state.json'"});
  write_file_atomically(manifest3.string(), good);
  ckpt::verify_checkpoint(c3, &cfg);

  // A config changed since the checkpoint (a key that defines the run), by name and values;
  // keys that only say how the run is laid out or reported may change.
  train::Config changed = cfg;
  changed.optim.lr = 0.01;
  changed.train.seq_len = 8;
  expect_error([&] { ckpt::verify_checkpoint(c3, &changed); },
               {(fs::path(c3) / "config.toml").string(), "optim.lr is 0.003", "but 0.01 now",
                "train.seq_len is 16 in the checkpoint but 8 now"});
  expect_error([&] { run(changed, out, c3); }, {"config.toml", "optim.lr"});
  train::Config relaid = cfg;
  relaid.train.log_every = 1, relaid.train.micro_batches = 2, relaid.parallel.zero_stage = 2;
  EXPECT_NO_THROW(ckpt::verify_checkpoint(c3, &relaid));

  // Nothing verifies: --resume latest refuses, listing each reason.
  const fs::path lonely = temp_dir("nothing_verifies") / "run";
  fs::create_directories(lonely / "checkpoints");
  fs::copy(c8, ckpt::checkpoint_dir(lonely.string(), 8), fs::copy_options::recursive);
  fs::remove(fs::path(ckpt::checkpoint_dir(lonely.string(), 8)) / "manifest.json");
  expect_error([&] { run(cfg, lonely, "latest"); },
               {"no checkpoint", "verifies", "manifest.json", "did not finish"});
}

// A save that hits a file-size limit (EFBIG, as a full disk's ENOSPC) in a child process: the
// child's first checkpoint (step 3) is written before the limit is set, the later saves fail.
// (The failure path is the same for background saves; foreground ones make the test timing-free.)
TEST(Checkpoint, DiskFullDuringSaveLeavesThePreviousCheckpointLoadable) {
  if (const char* child = std::getenv("TESSERA_CKPT_DISK_FULL_CHILD")) {
    const fs::path out(child);
    FILE* console = std::fopen((out.parent_path() / "child.txt").c_str(), "w");
    train::Config c = job(tessera::testing::write_tiny_corpus(out.parent_path()), 7);
    c.train.checkpoint_async = 0;  // step 3's files are complete before the limit is set
    try {
      train::RunSummary s = run(
          c, out, "",
          [](int64_t step, double, auto&) {
            if (step != 4) return;
            ::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead
            rlimit lim{64 * 1024, 64 * 1024};
            ::setrlimit(RLIMIT_FSIZE, &lim);
          },
          console);
      std::fprintf(console, "finished: %ld failures\n", long(s.checkpoint_failures));
    } catch (const Error& e) {
      std::fprintf(console, "error: %s\n", e.what());
    }
    std::fclose(console);
    std::_Exit(0);
  }
  const fs::path dir = temp_dir("disk_full");
  const fs::path out = dir / "run";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // A fresh process (exec), so no thread of this one is inherited half-way.
    ::setenv("TESSERA_CKPT_DISK_FULL_CHILD", out.c_str(), 1);
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, STDOUT_FILENO);
    ::execl("/proc/self/exe", "test_checkpoint",
            "--gtest_filter=Checkpoint.DiskFullDuringSaveLeavesThePreviousCheckpointLoadable",
            static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const std::string log = bytes_of(dir / "child.txt");
  // The saves of steps 6 and 7 fail naming the file and the error; then the final weights cannot
  // be written either, which stops the run.
  EXPECT_NE(log.find("checkpoint: step 3 ->"), std::string::npos) << log;
  EXPECT_NE(log.find("saving step 6 failed"), std::string::npos) << log;
  EXPECT_NE(log.find("saving step 7 failed"), std::string::npos) << log;
  EXPECT_NE(log.find("File too large"), std::string::npos) << log;
  EXPECT_NE(log.find("earlier checkpoints are intact"), std::string::npos) << log;
  std::vector<int64_t> steps;
  for (const auto& [s, p] : ckpt::list_checkpoints(out.string())) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{3}));
  for (const fs::directory_entry& e : fs::directory_iterator(out / "checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  // Step 3 verifies and resumes.
  train::Config c = job(dir / "corpus.txt", 7);
  ckpt::verify_checkpoint(ckpt::checkpoint_dir(out.string(), 3), &c);
  train::RunSummary b = run(c, out, "latest");
  EXPECT_EQ(b.start_step, 3);
  EXPECT_EQ(b.steps, 7);
}

TEST(Checkpoint, NonFiniteStepsAreSkippedCountedAndStopTheRunAfterKInARow) {
  const Reference& ref = reference();
  // A NaN written into the first parameter after step 2 makes every later loss NaN (skipped
  // steps do not update, so the NaN stays).
  auto poison = [](int64_t step, double, dist::DataParallel& dp) {
    if (step == 2) dp.training_state().values.data<float>()[0] = std::nanf("");
  };
  train::Config c = job(ref.corpus);
  c.train.checkpoint_every = 0;
  c.train.max_bad_steps = 3;
  expect_error([&] { run(c, temp_dir("bad3") / "run", "", poison); },
               {"3 steps in a row (steps 3 to 5)", "non-finite", "train.max_bad_steps = 3"});
  c.train.max_bad_steps = 0;
  train::RunSummary s = run(c, temp_dir("bad0") / "run", "", poison);
  EXPECT_EQ(s.steps, 8);
  EXPECT_EQ(s.bad_steps, 6);
  EXPECT_TRUE(std::isfinite(s.losses[1]) && std::isnan(s.losses[2]));
}

// The classifier task resumes the same way: a tiny MLP with dropout on synthetic images in
// Fashion-MNIST's file layout, stopped by SIGTERM during step 4 and resumed, equals the
// uninterrupted run in every later loss and in its final weights.
TEST(Checkpoint, ClassifierResumeIsBitExact) {
  const fs::path dir = temp_dir("classifier");
  tessera::testing::write_tiny_images(dir);
  train::Config c = train::parse_config(
      "[model]\nkind = \"mlp\"\nmlp_hidden = 16\nmlp_layers = 2\ndropout = 0.1\n"
      "[data]\nkind = \"fashion-mnist\"\npath = \"" +
          dir.string() +
          "\"\n"
          "[optim]\nlr = 1e-2\nwarmup_steps = 2\n"
          "[train]\nsteps = 8\nbatch_size = 16\neval_every = 4\neval_batches = 2\n"
          "log_every = 1\ncheckpoint_every = 3\nthreads = 1\n",
      "classifier.toml");
  const train::RunSummary full = run(c, dir / "full");
  ASSERT_EQ(full.losses.size(), 8u);
  const fs::path out = dir / "stopped";
  train::RunSummary a = run(c, out, "", [](int64_t step, double, auto&) {
    if (step == 4) ::raise(SIGTERM);
  });
  EXPECT_TRUE(a.interrupted);
  EXPECT_EQ(a.steps, 4);
  train::RunSummary b = run(c, out, "latest");
  EXPECT_EQ(b.start_step, 4);
  expect_same_losses(full.losses, b);
  EXPECT_TRUE(bytes_of(out / "model.safetensors") == bytes_of(dir / "full" / "model.safetensors"))
      << "final weights differ";
  ASSERT_TRUE(full.samples_digest.has_value());
  EXPECT_EQ(b.samples_digest, full.samples_digest) << "the resumed epoch drew other images";
}
