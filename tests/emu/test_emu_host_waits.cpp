// How often a training step on the (emulated) GPU makes the host wait for the device. Each wait
// is a stall of the host's queueing of kernels: on a GPU, the time the device runs dry. Counted
// by the emulated runtime (tessera::emu::host_waits), per step, for a tiny GPT.
//
// The bound (docs/CUDA.md, "Host waits"): at most one wait per logged step, none on the
// others. The device decides each step (train/step_decider.h: the gradient norm, clipping, the
// non-finite guard and fp16's loss scale stay on the device) and the host reads the verdicts
// and losses of the steps since the last read in one wait, at logged steps. The ids' range
// checks read the host copy kept from their upload, the cross-entropy's mean stays on the
// device and its backward reads the incoming gradient there. A new hidden wait fails the test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "dist/local_comm.h"
#include "emu/device.h"
#include "mpi/tiny_job.h"
#include "scratch.h"
#include "train/trainer.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

std::vector<uint64_t> waits_per_step(const std::string& precision, int64_t log_every) {
  const fs::path dir = tessera::testing::scratch_dir("emu_host_waits");
  train::Config c = tessera::testing::tiny_gpt_job(tessera::testing::write_tiny_corpus(dir), 12);
  c.train.device = "cuda";
  c.train.precision = precision;
  c.train.eval_every = 0;
  c.train.log_every = log_every;
  train::RunOptions o;
  o.out_dir = (dir / "run").string();
  o.plot = false;
  o.console = stderr;
  o.comm = std::make_shared<dist::LocalCommunicator>();
  std::vector<uint64_t> marks;
  o.on_step = [&](int64_t, double, dist::DataParallel&) { marks.push_back(emu::host_waits()); };
  train::run_training(c, o);
  // per_step[k]: the waits of step k + 2 (marks[i] is taken after step i + 1).
  std::vector<uint64_t> per_step;
  for (size_t i = 1; i < marks.size(); ++i) per_step.push_back(marks[i] - marks[i - 1]);
  return per_step;
}

TEST(EmuHostWaits, OnlyLoggedStepsWaitOnce) {
  constexpr int64_t kLogEvery = 4;
  for (const char* precision : {"f32", "fp16"}) {
    const std::vector<uint64_t> w = waits_per_step(precision, kLogEvery);
    ASSERT_EQ(w.size(), 11u);  // steps 2-12
    std::printf("[host waits] tiny GPT, %s, log_every %lld: steps 2-12:", precision,
                static_cast<long long>(kLogEvery));
    for (uint64_t n : w) std::printf(" %llu", static_cast<unsigned long long>(n));
    std::printf("\n");
    // Every step but the last (which also copies the final weights to the host).
    for (size_t k = 0; k + 1 < w.size(); ++k) {
      const int64_t step = int64_t(k) + 2;
      if (step % kLogEvery == 0)
        EXPECT_EQ(w[k], 1u) << precision << ": logged step " << step << " reads its verdicts once";
      else
        EXPECT_EQ(w[k], 0u) << precision << ": step " << step << " is not logged";
    }
  }
}

}  // namespace
