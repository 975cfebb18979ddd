// Checkpoint saves under injected faults (tests/fault_file_system.h), through the real save and
// load code: writer kills at random bytes and operations in every phase of a save, simulated
// power cuts, corrupted files and a full disk. After each, a restarted run's `--resume latest`
// (remove_stale_temporaries, then find_latest_checkpoint) must get the newest committed
// checkpoint, bit for bit, and never a partial one. Each test prints its figure ("[figure]").
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "ckpt/checkpoint.h"
#include "core/file_system.h"
#include "dist/local_comm.h"
#include "fault_file_system.h"
#include "nn/safetensors.h"
#include "scratch.h"
#include "train/config.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::FaultFileSystem;

namespace {

constexpr int64_t kKeep = 2;
using Files = std::map<std::string, std::string>;  // name -> bytes

// The smallest real checkpoint: two weight tensors, AdamW state for their 17 flat elements.
// `life` changes every value, as a run that resumed from an older checkpoint and saved the
// same step again would.
ckpt::Snapshot make_snapshot(int64_t step, int life) {
  auto values = [&](int n, float base) {
    std::vector<float> v(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) v[size_t(i)] = base + float(step) + 0.5f * float(life) + 0.01f * i;
    return v;
  };
  ckpt::Snapshot s;
  s.step = step;
  s.weights = {{"a", Tensor::from_vector(values(12, 1), Shape{4, 3})},
               {"b", Tensor::from_vector(values(5, 2), Shape{5})}};
  s.weights_metadata = {{"format", "pt"}, {"tessera_model", "test"}};
  s.config_toml = train::to_toml(train::Config{});
  s.trainer.step = step;
  s.trainer.optimizer = "adamw";
  s.trainer.optimizer_steps = step;
  s.trainer.flat_numel = 17;
  s.trainer.optimizer_shards = {{ckpt::optimizer_file_name(0), 0, 17}};
  s.optimizer_file = ckpt::optimizer_file_name(0);
  s.optimizer_buffers = {{"exp_avg", Tensor::from_vector(values(17, 3), Shape{17})},
                         {"exp_avg_sq", Tensor::from_vector(values(17, 4), Shape{17})}};
  s.optimizer_metadata = {
      {"optimizer", "adamw"}, {"flat_numel", "17"}, {"begin", "0"}, {"end", "17"}};
  return s;
}

// A save, in the foreground or on the writer's background thread (train.checkpoint_async), which
// is where a training run's saves happen by default; the fault file system serves both.
ckpt::SaveResult save(const std::string& run, int64_t step, int life, bool async = false) {
  dist::LocalCommunicator comm;
  ckpt::CheckpointWriter writer(comm, run, kKeep);
  writer.start(make_snapshot(step, life), async);
  return writer.finish();
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

Files folder_files(const fs::path& dir) {
  Files out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename()] = read_bytes(e.path());
  return out;
}

void copy_tree(const fs::path& from, const fs::path& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
}

// A run folder before the save under test, the save's step, and what each outcome looks like.
struct Scenario {
  std::string name;
  bool async = false;     // the save under test runs on the writer's background thread
  fs::path template_run;  // the checkpoints before the save
  int64_t step = 0;       // the save under test writes this step, life 1
  Files before;           // the newest committed checkpoint before it
  Files after;            // the new checkpoint
  // From the counting pass (a clean save, no faults):
  uint64_t ops = 0, bytes = 0;
  uint64_t commit_rename = 0;  // the operation that renames the folder into place
  uint64_t commit_sync = 0;    // the fsync of checkpoints/ that makes that rename durable
  std::vector<std::string> log;
};

// "first": an empty run folder (the save makes checkpoints/). "keep_k": steps 1 and 2
// committed, the save of 3 deletes 1. "overwrite": steps 1, 2 and 3 (life 0) committed, the save
// of 3 (life 1, as a resumed run makes) replaces it and deletes 1.
Scenario make_scenario(const fs::path& root, const std::string& name, bool async) {
  Scenario sc;
  sc.name = name;
  sc.async = async;
  sc.step = 3;
  const int64_t existing = name == "first" ? 0 : name == "keep_k" ? 2 : 3;
  const fs::path run = root / (name + "_setup");
  fs::create_directories(run);
  for (int64_t step = 1; step <= existing; ++step) {
    dist::LocalCommunicator comm;
    ckpt::CheckpointWriter writer(comm, run.string(), 3);  // keep all three
    writer.start(make_snapshot(step, 0), false);
    EXPECT_TRUE(writer.finish().ok);
  }
  sc.before = existing == 0 ? Files{{"", "no checkpoint loads"}}
                            : folder_files(ckpt::checkpoint_dir(run.string(), existing));
  sc.template_run = root / (name + "_template");
  copy_tree(run, sc.template_run);

  // Counting pass: the same save with no faults, through the fault file system.
  const fs::path work = root / (name + "_count");
  copy_tree(sc.template_run, work);
  FaultFileSystem faults(work.string());
  {
    ScopedFileSystem scope(faults);
    EXPECT_TRUE(save(work.string(), 3, 1, async).ok);
  }
  sc.ops = faults.ops(), sc.bytes = faults.bytes(), sc.log = faults.log();
  sc.after = folder_files(ckpt::checkpoint_dir(work.string(), 3));
  const std::string final_dir = ckpt::checkpoint_dir(work.string(), 3);
  for (uint64_t i = 0; i < sc.log.size(); ++i) {
    const std::string& l = sc.log[i];
    if (l.rfind("rename ", 0) == 0 && l.find(".tmp-") != std::string::npos &&
        l.size() >= final_dir.size() &&
        l.compare(l.size() - final_dir.size(), final_dir.size(), final_dir) == 0)
      sc.commit_rename = i;
  }
  for (uint64_t i = sc.commit_rename; i < sc.log.size(); ++i)
    if (sc.log[i] == "syncdir " + ckpt::checkpoints_dir(work.string())) {
      sc.commit_sync = i;
      break;
    }
  EXPECT_GT(sc.commit_rename, 0u) << name;
  EXPECT_GT(sc.commit_sync, sc.commit_rename) << name;
  std::printf(
      "[figure] scenario %s%s: a clean save is %llu operations, %llu bytes written; the "
      "folder is renamed into place at operation %llu, durable at %llu\n",
      name.c_str(), async ? " (background)" : "", (unsigned long long)sc.ops,
      (unsigned long long)sc.bytes, (unsigned long long)sc.commit_rename,
      (unsigned long long)sc.commit_sync);
  return sc;
}

// What a restarted run resumes from: start-up cleanup, then the newest that verifies. Returns
// the folder's files ("" key holds an error when nothing loads).
Files restart_and_load(const fs::path& run) {
  ckpt::CheckpointWriter::remove_stale_temporaries(run.string());
  auto latest = ckpt::find_latest_checkpoint(run.string(), nullptr, nullptr);
  if (!latest) return {{"", "no checkpoint loads"}};
  // The real readers too: the weights parse, as load_into would read them.
  nn::read_safetensors((fs::path(latest->dir) / ckpt::kModelName).string());
  return folder_files(latest->dir);
}

enum class Fault { kill_at_op, kill_at_byte, power_cut_at_op };

enum class Outcome { newest_committed, older_checkpoint, partial_or_none };

// One interrupted save and one restart: whether the load was the newest committed checkpoint
// bit for bit, another complete one, or anything else; `kind` gets the interrupted operation's
// kind ("write", "rename", ...).
Outcome interrupted_save(const Scenario& sc, const fs::path& run, Fault fault, uint64_t at,
                         std::string* kind) {
  copy_tree(sc.template_run, run);
  FaultFileSystem faults(run.string());
  if (fault == Fault::kill_at_byte)
    faults.kill_at_byte(at);
  else
    faults.kill_at_op(at);
  bool returned_ok = false;
  {
    ScopedFileSystem scope(faults);
    try {
      returned_ok = save(run.string(), sc.step, 1, sc.async).ok;
    } catch (const std::exception&) {
    }
  }
  const uint64_t failed_op = faults.ops() - 1;  // the operation that died (when one did)
  const bool died = faults.dead();
  *kind = died ? faults.log().back().substr(0, faults.log().back().find(' ')) : "none";
  bool committed;
  if (fault == Fault::power_cut_at_op) {
    faults.power_cut();
    committed = !died || failed_op > sc.commit_sync;
  } else {
    faults.revive();
    committed = !died || failed_op > sc.commit_rename;
  }
  // A save that returned reported success; one that did not commit never does (one killed after
  // its commit, while deleting old checkpoints, may: that part is best effort).
  if (!died) {
    EXPECT_TRUE(returned_ok);
  } else if (failed_op <= sc.commit_rename) {
    EXPECT_FALSE(returned_ok);
  }
  const Files got = restart_and_load(run);
  const Files& want = committed ? sc.after : sc.before;
  EXPECT_TRUE(got == want) << sc.name << ": fault " << int(fault) << " at " << at << " (" << *kind
                           << "): loaded " << (got.count("") ? got.at("") : "a checkpoint")
                           << ", expected the " << (committed ? "new" : "previous") << " one";
  if (got == want) return Outcome::newest_committed;
  if (got == sc.before || got == sc.after) return Outcome::older_checkpoint;
  return Outcome::partial_or_none;
}

struct Tally {
  int newest = 0, older = 0, partial = 0;
  std::map<std::string, int> phases;
  void add(Outcome o, const std::string& kind) {
    o == Outcome::newest_committed   ? ++newest
    : o == Outcome::older_checkpoint ? ++older
                                     : ++partial;
    ++phases[kind];
  }
  std::string where() const {
    std::string s;
    for (const auto& [k, n] : phases) s += fmt::format(" {} {}", k, n);
    return s;
  }
};

// The three situations a fault test visits in turn: a run's first save, a save that deletes the
// oldest checkpoint (keep 2), a save over an existing folder of the same step.
std::array<Scenario, 3> every_scenario(const fs::path& root, bool async = false) {
  return {make_scenario(root, "first", async), make_scenario(root, "keep_k", async),
          make_scenario(root, "overwrite", async)};
}

}  // namespace

TEST(CheckpointFaults, WriterKillsInEveryPhaseLeaveTheNewestCommittedCheckpoint) {
  const fs::path root = tessera::testing::scratch_dir("ckpt_kills");
  const std::array<Scenario, 3> scenarios = every_scenario(root);
  std::mt19937_64 rng(16);
  Tally t;
  for (int trial = 0; trial < 200; ++trial) {
    const Scenario& sc = scenarios[trial % 3];
    // Half at a byte offset, half at an operation, each uniform over what a clean save does.
    const bool by_byte = (trial / 3) % 2 == 0;
    const uint64_t at = by_byte ? rng() % sc.bytes : rng() % sc.ops;
    std::string kind;
    t.add(interrupted_save(sc, root / "run", by_byte ? Fault::kill_at_byte : Fault::kill_at_op, at,
                           &kind),
          kind);
  }
  std::printf(
      "[figure] 200 kills: %d loads of the newest committed checkpoint, %d partial loads, "
      "%d of an older one (killed during:%s)\n",
      t.newest, t.partial, t.older, t.where().c_str());
  EXPECT_EQ(t.newest, 200);
  EXPECT_EQ(t.partial, 0);
}

TEST(CheckpointFaults, PowerCutsLeaveTheNewestDurableCheckpoint) {
  const fs::path root = tessera::testing::scratch_dir("ckpt_power");
  const std::array<Scenario, 3> scenarios = every_scenario(root);
  std::mt19937_64 rng(1616);
  Tally t;
  int after_return = 0;
  for (int trial = 0; trial < 100; ++trial) {
    const Scenario& sc = scenarios[trial % 3];
    // Every tenth cut comes just after save() returned: the new checkpoint must survive it.
    const uint64_t at = trial % 10 == 9 ? sc.ops : rng() % (sc.ops + 1);
    after_return += at == sc.ops;
    std::string kind;
    t.add(interrupted_save(sc, root / "run", Fault::power_cut_at_op, at, &kind), kind);
  }
  std::printf(
      "[figure] 100 power cuts (%d just after save returned): %d loads of the newest "
      "committed checkpoint, %d partial loads, %d of an older one (cut during:%s)\n",
      after_return, t.newest, t.partial, t.older, t.where().c_str());
  EXPECT_EQ(t.newest, 100);
  EXPECT_EQ(t.partial, 0);
}

// The same faults hitting saves on the writer's background thread, as a training run's saves
// are by default: the kill or the power cut lands on that thread, and finish() reports it.
TEST(CheckpointFaults, BackgroundSavesUnderKillsAndPowerCuts) {
  const fs::path root = tessera::testing::scratch_dir("ckpt_background");
  const std::array<Scenario, 3> scenarios = every_scenario(root, /*async=*/true);
  std::mt19937_64 rng(1617);
  Tally kills, cuts;
  for (int trial = 0; trial < 100; ++trial) {
    const Scenario& sc = scenarios[trial % 3];
    const bool by_byte = (trial / 3) % 2 == 0;
    const uint64_t at = by_byte ? rng() % sc.bytes : rng() % sc.ops;
    std::string kind;
    kills.add(interrupted_save(sc, root / "run", by_byte ? Fault::kill_at_byte : Fault::kill_at_op,
                               at, &kind),
              kind);
  }
  for (int trial = 0; trial < 50; ++trial) {
    const Scenario& sc = scenarios[trial % 3];
    const uint64_t at = trial % 10 == 9 ? sc.ops : rng() % (sc.ops + 1);
    std::string kind;
    cuts.add(interrupted_save(sc, root / "run", Fault::power_cut_at_op, at, &kind), kind);
  }
  std::printf(
      "[figure] background saves: 100 kills: %d loads of the newest committed checkpoint, %d "
      "partial (killed during:%s); 50 power cuts: %d newest, %d partial (cut during:%s)\n",
      kills.newest, kills.partial, kills.where().c_str(), cuts.newest, cuts.partial,
      cuts.where().c_str());
  EXPECT_EQ(kills.newest, 100);
  EXPECT_EQ(cuts.newest, 50);
  EXPECT_EQ(kills.partial + cuts.partial, 0);
}

TEST(CheckpointFaults, EveryBitFlipAndTruncationIsDetected) {
  const fs::path root = tessera::testing::scratch_dir("ckpt_flips");
  const std::string run = (root / "run").string();
  ASSERT_TRUE(save(run, 1, 0).ok);
  ASSERT_TRUE(save(run, 2, 0).ok);
  const std::string dirs[] = {ckpt::checkpoint_dir(run, 1), ckpt::checkpoint_dir(run, 2)};
  const Files originals[] = {folder_files(dirs[0]), folder_files(dirs[1])};
  std::mt19937_64 rng(10000);
  int detected = 0, fell_back = 0, flips = 0, truncations = 0;
  std::map<std::string, int> per_file;
  for (int trial = 0; trial < 10000; ++trial) {
    const int c = int(rng() % 2);  // which checkpoint; the other is the one to fall back to
    auto file = originals[c].begin();
    std::advance(file, rng() % originals[c].size());
    const fs::path path = fs::path(dirs[c]) / file->first;
    std::string bytes = file->second, change;
    if (rng() % 2 == 0) {
      const uint64_t bit = rng() % (bytes.size() * 8);
      bytes[bit / 8] = char(bytes[bit / 8] ^ (1 << (bit % 8)));
      change = fmt::format("bit {} of byte {} flipped: '{}' -> '{}'", bit % 8, bit / 8,
                           file->second[bit / 8], bytes[bit / 8]);
      ++flips;
    } else {
      bytes.resize(rng() % bytes.size());
      change = fmt::format("truncated to {} bytes", bytes.size());
      ++truncations;
    }
    write_bytes(path, bytes);
    ++per_file[file->first];
    try {
      ckpt::verify_checkpoint(dirs[c], nullptr);
      ADD_FAILURE() << "not detected: " << path << " trial " << trial << ": " << change;
    } catch (const Error&) {
      ++detected;
    }
    int rejected = 0;
    auto latest =
        ckpt::find_latest_checkpoint(run, nullptr, [&](const std::string&) { ++rejected; });
    const bool ok = latest && latest->dir == dirs[1 - c] && rejected == (c == 1 ? 1 : 0);
    fell_back += ok;
    EXPECT_TRUE(ok) << "trial " << trial << ": " << path;
    write_bytes(path, file->second);
  }
  std::string files;
  for (const auto& [n, k] : per_file) files += fmt::format(" {} {}", n, k);
  std::printf(
      "[figure] 10000 corruptions (%d bit flips, %d truncations over%s): %d detected "
      "(%.1f%%), latest = the other checkpoint in %d\n",
      flips, truncations, files.c_str(), detected, 100.0 * detected / 10000, fell_back);
  EXPECT_EQ(detected, 10000);
  EXPECT_EQ(fell_back, 10000);
}

TEST(CheckpointFaults, FullDiskFailsTheSaveNamingTheFileAndKeepsTheOldOnes) {
  const fs::path root = tessera::testing::scratch_dir("ckpt_enospc");
  const Scenario sc = make_scenario(root, "keep_k", /*async=*/false);
  const fs::path run = root / "run";
  // Out of space at the first byte, in the middle, and one byte short of a whole save.
  for (const uint64_t budget : {uint64_t(0), sc.bytes / 2, sc.bytes - 1}) {
    copy_tree(sc.template_run, run);
    FaultFileSystem faults(run.string());
    faults.limit_space(budget);
    ckpt::SaveResult r;
    {
      ScopedFileSystem scope(faults);
      r = save(run.string(), 3, 1);
    }
    EXPECT_FALSE(r.ok) << budget;
    EXPECT_NE(r.error.find("No space left on device"), std::string::npos) << r.error;
    EXPECT_NE(r.error.find(ckpt::checkpoint_dir(run.string(), 3) + ".tmp-"), std::string::npos)
        << "the error names the file: " << r.error;
    std::printf("[figure] full disk after %llu of %llu bytes: %s\n", (unsigned long long)budget,
                (unsigned long long)sc.bytes, r.error.c_str());
    // Nothing left behind, nothing older touched: steps 1 and 2 are there and verify.
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(run / "checkpoints"))
      names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"step_00000001", "step_00000002"}));
    EXPECT_NO_THROW(ckpt::verify_checkpoint(ckpt::checkpoint_dir(run.string(), 1), nullptr));
    EXPECT_TRUE(restart_and_load(run) == sc.before);
  }
}

// TESSERA_FAULT_FS's file system (soak runs of the real binary): the write that crosses the
// free space writes what fits and fails with ENOSPC naming the file; the disk then stays full
// until `full_for_s` has passed.
TEST(CheckpointFaults, AFillingDiskFailsWritesThenHasRoomAgain) {
  const fs::path root = tessera::testing::scratch_dir("ckpt_filling");
  const std::unique_ptr<tessera::FileSystem> disk = tessera::filling_file_system(10, 0.2);
  const std::string a = (root / "a").string(), b = (root / "b").string();
  {
    std::unique_ptr<tessera::WritableFile> f = disk->create_file(a);
    f->append("0123456", 7);
    try {
      f->append("789abc", 6);
      FAIL() << "a write past the free space succeeded";
    } catch (const tessera::Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + a + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos)
          << e.what();
    }
    f->close();
  }
  EXPECT_EQ(tessera::file_size(a), 10u);  // what fitted
  std::unique_ptr<tessera::WritableFile> g = disk->create_file(b);
  EXPECT_THROW(g->append("x", 1), tessera::Error);  // still full
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  g->append("room again", 10);
  g->close();
  EXPECT_EQ(tessera::file_size(b), 10u);
}
