// The file-system layer beyond checkpoints (core/file_system.h):
//  - append_file and truncate, on POSIX and through the fault-injecting file system;
//  - TESSERA_FAULT_FS's value (parse_fault_fs_setting): what it accepts, and the message for
//    what it does not;
//  - metrics.jsonl (train/metrics.h) under faults: a full disk warns naming the file, keeps the
//    lines and writes them when there is room, never leaving a cut line; a power cut loses only
//    the lines not yet synced; the trainer makes its run folder, config.toml and metrics through
//    the layer, trains on through a full disk, and after a power cut resumes with whole metrics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_system.h"
#include "dist/local_comm.h"
#include "fault_file_system.h"
#include "gradcheck.h"
#include "mpi/tiny_job.h"
#include "scratch.h"
#include "train/metrics.h"
#include "train/trainer.h"
#include "train/trainer_setup.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::expect_error;
using tessera::testing::FaultFileSystem;
using tessera::testing::scratch_dir;

namespace {

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string line(int64_t step) {
  return nlohmann::json{{"step", step}, {"loss", 1.0 / double(step)}}.dump() + "\n";
}

std::string lines(int64_t first, int64_t last) {
  std::string s;
  for (int64_t step = first; step <= last; ++step) s += line(step);
  return s;
}

// Every line of a metrics file parses as an object; their steps in order.
std::vector<int64_t> steps_in(const fs::path& metrics) {
  const std::string text = read_bytes(metrics);
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "a cut last line: " << text;
  std::vector<int64_t> steps;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    const nlohmann::json j = nlohmann::json::parse(l, nullptr, false);
    EXPECT_TRUE(j.is_object()) << "not a whole line: '" << l << "'";
    if (j.is_object()) steps.push_back(j["step"].get<int64_t>());
  }
  return steps;
}

std::vector<int64_t> range(int64_t first, int64_t last) {
  std::vector<int64_t> v;
  for (int64_t s = first; s <= last; ++s) v.push_back(s);
  return v;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

// ---- append_file and truncate ----

TEST(FileSystemAppend, AppendsAfterTheContentsAndTruncateMovesTheEnd) {
  const fs::path root = scratch_dir("fs_append");
  const std::string p = (root / "log").string();
  std::ofstream(p) << "abc\n";
  {
    std::unique_ptr<WritableFile> f = posix_file_system().append_file(p);
    f->append("def\n", 4);
    f->truncate(6);  // "abc\nde"
    f->append("x\n", 2);
    f->sync();
    f->close();
  }
  EXPECT_EQ(read_bytes(p), "abc\ndex\n");
  const std::string fresh = (root / "fresh").string();
  posix_file_system().append_file(fresh)->append("1", 1);
  EXPECT_EQ(read_bytes(fresh), "1");
  expect_error([&] { posix_file_system().append_file((root / "no" / "x").string()); },
               {"cannot open", "for appending", "No such file or directory"});
}

// The fault model of an append: what the file held stays, the appended bytes are durable once
// synced, and a file the append created is durable once its folder is synced too.
TEST(FileSystemAppend, FaultModelKeepsSyncedAppendsAndDropsTheRest) {
  const fs::path root = scratch_dir("fs_append_faults");
  const std::string old_file = (root / "old").string(), new_file = (root / "new").string();
  std::ofstream(old_file) << "durable\n";
  FaultFileSystem faults(root.string());
  {
    std::unique_ptr<WritableFile> f = faults.append_file(old_file);
    f->append("synced\n", 7);
    f->sync();
    f->append("lost\n", 5);
    std::unique_ptr<WritableFile> g = faults.append_file(new_file);
    g->append("entry not synced\n", 17);
    g->sync();
  }
  faults.power_cut();
  EXPECT_EQ(read_bytes(old_file), "durable\nsynced\n");
  EXPECT_FALSE(fs::exists(new_file));
  {
    std::unique_ptr<WritableFile> g = faults.append_file(new_file);
    g->append("kept\n", 5);
    g->truncate(2);
    g->append("t\n", 2);
    g->sync();
    faults.sync_directory(root.string());
  }
  faults.power_cut();
  EXPECT_EQ(read_bytes(new_file), "ket\n");
}

// ---- TESSERA_FAULT_FS ----

TEST(FaultFsSetting, ReadsEnospcWithOptionalBytesAndSeconds) {
  EXPECT_FALSE(parse_fault_fs_setting("").has_value());
  EXPECT_EQ(parse_fault_fs_setting("enospc"), (FillingDiskSetting{0, -1}));
  EXPECT_EQ(parse_fault_fs_setting("enospc:4096"), (FillingDiskSetting{4096, -1}));
  EXPECT_EQ(parse_fault_fs_setting("enospc:123:5"), (FillingDiskSetting{123, 5}));
  EXPECT_EQ(parse_fault_fs_setting("enospc:0:0"), (FillingDiskSetting{0, 0}));
  EXPECT_EQ(parse_fault_fs_setting("enospc:007:010"), (FillingDiskSetting{7, 10}));
  EXPECT_EQ(parse_fault_fs_setting("enospc:999999999999999999"),
            (FillingDiskSetting{999999999999999999ull, -1}));
  EXPECT_EQ(parse_fault_fs_setting("enospc:1:999999999999999999"),
            (FillingDiskSetting{1, 999999999999999999.0}));
}

TEST(FaultFsSetting, RefusesAnythingElseQuotingTheValue) {
  const char* bad[] = {"enospc:",
                       "enospc::5",
                       "enospc:1:",
                       "enospc:1:2:3",
                       "enospc:-1",
                       "enospc:+1",
                       "enospc:1.5",
                       "enospc:1e3",
                       "enospc: 1",
                       "enospc:0x10",
                       "ENOSPC",
                       "enospc ",
                       "eio",
                       ":",
                       "enospcx:1",
                       "enospc:1:2:",
                       "enospc:1000000000000000000",  // 19 digits
                       "enospc:1:1000000000000000000"};
  for (const char* v : bad) {
    SCOPED_TRACE(v);
    expect_error([&] { parse_fault_fs_setting(v); },
                 {"environment variable TESSERA_FAULT_FS = '" + std::string(v) + "'",
                  "expected enospc[:BYTES[:SECONDS]] (checkpoint writes fail as on a full disk "
                  "after BYTES more bytes, for SECONDS) or unset"});
  }
  // A NUL, which no environment variable can hold, is refused as well (what() ends there).
  expect_error([] { parse_fault_fs_setting(std::string_view("enospc:1\0", 9)); },
               {"environment variable TESSERA_FAULT_FS = 'enospc:1"});
}

// ---- metrics.jsonl under faults ----

// A full disk: the append that does not fit is cut back off (no partial line stays), the
// warning names the file and the error once, the lines wait in memory, and the next write once
// there is room puts them all in, in order.
TEST(MetricsFaults, FullDiskWarnsNamingTheFileAndWritesTheLinesWhenThereIsRoom) {
  const fs::path root = scratch_dir("metrics_full");
  const fs::path path = root / "metrics.jsonl";
  FaultFileSystem faults(root.string());
  ScopedFileSystem scope(faults);
  std::vector<std::string> warnings;
  train::MetricsWriter w(path.string(), [&](const std::string& t) { warnings.push_back(t); });
  for (int64_t s = 1; s <= 2; ++s) w.write({{"step", s}, {"loss", 1.0 / double(s)}});
  EXPECT_EQ(read_bytes(path), lines(1, 2));

  faults.limit_space(faults.bytes() + 10);  // line 3 does not fit: 10 of its bytes do
  w.write({{"step", 3}, {"loss", 1.0 / 3}});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(contains(warnings[0], "metrics: cannot append to '" + path.string() + "'"))
      << warnings[0];
  EXPECT_TRUE(contains(warnings[0], "No space left on device")) << warnings[0];
  EXPECT_TRUE(contains(warnings[0], "training continues")) << warnings[0];
  EXPECT_EQ(read_bytes(path), lines(1, 2));  // the 10 bytes were cut off again
  w.write({{"step", 4}, {"loss", 1.0 / 4}});
  w.sync();                        // syncs the whole lines; still no room for the rest
  EXPECT_EQ(warnings.size(), 1u);  // one warning per spell
  EXPECT_EQ(w.pending_lines(), 2u);
  EXPECT_EQ(read_bytes(path), lines(1, 2));

  faults.limit_space(UINT64_MAX);
  w.write({{"step", 5}, {"loss", 1.0 / 5}});
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_TRUE(contains(warnings[1], "is writable again: 2 delayed lines written")) << warnings[1];
  EXPECT_EQ(w.pending_lines(), 0u);
  EXPECT_EQ(read_bytes(path), lines(1, 5));
  EXPECT_EQ(steps_in(path), range(1, 5));
}

// Power cuts at every byte of an append and after a full disk: what survives is exactly the
// lines synced before, whole; the file itself survives its first sync (its folder is synced).
TEST(MetricsFaults, PowerCutLosesOnlyUnsyncedLinesAndNeverLeavesACutLine) {
  const fs::path root = scratch_dir("metrics_power");
  const fs::path path = root / "metrics.jsonl";
  const uint64_t line_bytes = line(4).size();
  int cuts = 0;
  for (uint64_t at = 0; at <= line_bytes; ++at) {
    fs::remove(path);
    FaultFileSystem faults(root.string());
    ScopedFileSystem scope(faults);
    {
      train::MetricsWriter w(path.string(), [](const std::string&) {});
      for (int64_t s = 1; s <= 3; ++s) w.write({{"step", s}, {"loss", 1.0 / double(s)}});
      w.sync();
      faults.kill_at_byte(faults.bytes() + at);  // the process dies `at` bytes into line 4
      w.write({{"step", 4}, {"loss", 1.0 / 4}});
      w.sync();  // fails (dead) or, when line 4 fitted whole, makes it durable
    }
    const bool line4_synced = at == line_bytes;
    faults.power_cut();
    EXPECT_EQ(steps_in(path), range(1, line4_synced ? 4 : 3)) << "killed at byte " << at;
    ++cuts;
  }
  EXPECT_EQ(cuts, int(line_bytes) + 1);

  // A full disk cut an append short; a sync then; the power goes.
  fs::remove(path);
  FaultFileSystem faults(root.string());
  ScopedFileSystem scope(faults);
  {
    train::MetricsWriter w(path.string(), [](const std::string&) {});
    for (int64_t s = 1; s <= 3; ++s) w.write({{"step", s}, {"loss", 1.0 / double(s)}});
    faults.limit_space(faults.bytes() + 7);
    w.write({{"step", 4}, {"loss", 1.0 / 4}});
    w.sync();
    w.write({{"step", 5}, {"loss", 1.0 / 5}});  // unsynced: lost
  }
  faults.power_cut();
  EXPECT_EQ(steps_in(path), range(1, 3));
  // Never synced at all: the file was never made durable in its folder, and goes.
  faults.limit_space(UINT64_MAX);
  {
    train::MetricsWriter w((root / "other.jsonl").string(), [](const std::string&) {});
    w.write({{"step", 1}});
  }
  faults.power_cut();
  EXPECT_FALSE(fs::exists(root / "other.jsonl"));
}

// A kill in the middle of an append (no power cut) leaves a cut last line in the file; the
// resumed run's cut back to its checkpoint drops it, and its appends follow whole lines.
TEST(MetricsFaults, ACutLineFromAKillIsDroppedOnResume) {
  const fs::path root = scratch_dir("metrics_kill");
  const fs::path path = root / "metrics.jsonl";
  FaultFileSystem faults(root.string());
  ScopedFileSystem scope(faults);
  {
    train::MetricsWriter w(path.string(), [](const std::string&) {});
    for (int64_t s = 1; s <= 3; ++s) w.write({{"step", s}, {"loss", 1.0 / double(s)}});
    faults.kill_at_byte(faults.bytes() + 5);
    w.write({{"step", 4}, {"loss", 1.0 / 4}});
  }
  EXPECT_EQ(read_bytes(path), lines(1, 3) + line(4).substr(0, 5));
  faults.revive();
  train::keep_metrics_up_to(path, 3);
  train::MetricsWriter w(path.string(), [](const std::string&) {});
  w.write({{"step", 4}, {"loss", 1.0 / 4}});
  EXPECT_EQ(read_bytes(path), lines(1, 4));
}

namespace {

train::Config metrics_job(const fs::path& corpus, int64_t checkpoint_every) {
  train::Config c = tessera::testing::tiny_gpt_job(corpus, 8);
  c.train.log_every = 1;
  c.train.checkpoint_every = checkpoint_every;
  c.train.checkpoint_async = 0;
  return c;
}

train::RunSummary run(const train::Config& cfg, const fs::path& out, const fs::path& console,
                      train::StepCallback on_step = nullptr, std::string resume = "") {
  train::RunOptions o;
  o.out_dir = out.string();
  o.plot = false;
  o.console = std::fopen(console.c_str(), "w");
  o.comm = std::make_shared<dist::LocalCommunicator>();
  o.on_step = std::move(on_step);
  o.resume = std::move(resume);
  try {
    train::RunSummary s = train::run_training(cfg, o);
    std::fclose(o.console);
    return s;
  } catch (...) {
    std::fclose(o.console);
    throw;
  }
}

}  // namespace

// The trainer writes its run folder through the layer, and a disk full for steps 4-6 costs no
// metrics: the run warns naming metrics.jsonl, trains on, and writes the delayed lines.
TEST(MetricsFaults, TrainingGoesOnThroughAFullDiskWithWholeMetrics) {
  const fs::path root = scratch_dir("metrics_trainer_full");
  const fs::path corpus = tessera::testing::write_tiny_corpus(root / "data");
  const fs::path out = root / "runs" / "full";
  FaultFileSystem faults(root.string());
  ScopedFileSystem scope(faults);
  const train::RunSummary s =
      run(metrics_job(corpus, 0), out, root / "console.txt", [&](int64_t step, double, auto&) {
        if (step == 3) faults.limit_space(faults.bytes());  // full from here
        if (step == 6) faults.limit_space(UINT64_MAX);      // room again
      });
  EXPECT_EQ(s.steps, 8);
  EXPECT_EQ(steps_in(out / "metrics.jsonl"), range(1, 8));
  const std::string console = read_bytes(root / "console.txt");
  const std::string metrics = (out / "metrics.jsonl").string();
  EXPECT_TRUE(contains(console, "metrics: cannot append to '" + metrics + "'")) << console;
  EXPECT_TRUE(contains(console, "No space left on device")) << console;
  EXPECT_TRUE(contains(console, "is writable again: 3 delayed lines written")) << console;
  // Every run-folder write went through the file system under test.
  const std::vector<std::string>& log = faults.log();
  auto logged = [&](const std::string& entry) {
    return std::find(log.begin(), log.end(), entry) != log.end();
  };
  EXPECT_TRUE(logged("mkdir " + (root / "runs").string()));
  EXPECT_TRUE(logged("mkdir " + out.string()));
  EXPECT_TRUE(logged("append " + metrics));
  EXPECT_TRUE(logged("sync " + metrics));
  EXPECT_TRUE(logged("create " + (out / "config.toml.tmp").string()));
  EXPECT_TRUE(logged("create " + (out / "model.safetensors.tmp").string()));
}

// A power cut after step 5 of a run that checkpoints every 3 steps: metrics.jsonl keeps steps
// 1-3 (synced with the checkpoint of step 3), whole, and the resumed run completes it.
TEST(MetricsFaults, PowerCutKeepsTheMetricsOfTheCheckpointAndResumeCompletesThem) {
  const fs::path root = scratch_dir("metrics_trainer_power");
  const fs::path corpus = tessera::testing::write_tiny_corpus(root / "data");
  const fs::path out = root / "run";
  FaultFileSystem faults(root.string());
  ScopedFileSystem scope(faults);
  const train::Config cfg = metrics_job(corpus, 3);
  expect_error(
      [&] {
        run(cfg, out, root / "console.txt", [](int64_t step, double, auto&) {
          if (step == 5) fail("the power goes after step 5");
        });
      },
      {"the power goes"});
  EXPECT_EQ(steps_in(out / "metrics.jsonl"), range(1, 5));
  faults.power_cut();
  EXPECT_EQ(steps_in(out / "metrics.jsonl"), range(1, 3));
  const train::RunSummary s = run(cfg, out, root / "console2.txt", nullptr, "latest");
  EXPECT_EQ(s.start_step, 3);
  EXPECT_EQ(steps_in(out / "metrics.jsonl"), range(1, 8));
}
