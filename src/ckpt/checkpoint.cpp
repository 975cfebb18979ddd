#include "ckpt/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "core/file_system.h"
#include "nn/safetensors.h"

namespace tessera::ckpt {

namespace fs = std::filesystem;

std::string optimizer_file_name(int rank) {
  return fmt::format("optimizer_rank{}.safetensors", rank);
}

std::string checkpoints_dir(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints").string();
}

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(checkpoints_dir(run_dir)) / fmt::format("step_{:08d}", step)).string();
}

namespace {

// "step_00000120" -> 120; anything else (temporaries included) -> -1.
int64_t parse_step_name(const std::string& name) {
  constexpr std::string_view prefix = "step_";
  if (name.size() <= prefix.size() || name.size() > prefix.size() + 18 ||
      name.compare(0, prefix.size(), prefix) != 0)
    return -1;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// "step_00000120.old-<pid>" -> 120: a checkpoint set aside while a new save of the same step
// replaced it (CheckpointWriter::finish); anything else -> -1.
int64_t parse_set_aside_name(const std::string& name) {
  const size_t dot = name.find(".old-");
  if (dot == std::string::npos) return -1;
  for (size_t i = dot + 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return parse_step_name(name.substr(0, dot));
}

}  // namespace

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  const std::string dir = checkpoints_dir(run_dir);
  FileSystem& fs = file_system();
  if (fs.type(dir) != FileType::directory) return out;
  std::set<int64_t> steps;
  std::vector<std::pair<int64_t, std::string>> set_aside;
  for (const DirEntry& e : fs.list_directory(dir)) {
    if (e.type != FileType::directory) continue;
    if (const int64_t step = parse_step_name(e.name); step >= 0) {
      out.emplace_back(step, join(dir, e.name));
      steps.insert(step);
    } else if (const int64_t old = parse_set_aside_name(e.name); old >= 0) {
      set_aside.emplace_back(old, join(dir, e.name));
    }
  }
  // A save killed between setting the old folder of its step aside and renaming the new one
  // into place leaves only the old one: it is still that step's newest committed checkpoint.
  for (const auto& c : set_aside)
    if (steps.insert(c.first).second) out.push_back(c);
  std::sort(out.begin(), out.end());
  return out;
}

// ---- Snapshot ----

namespace {
// A host copy the background writer can read while training goes on (from a GPU: a
// synchronous device-to-host copy).
Tensor host_copy(const Tensor& t) {
  return t.device().is_cpu() ? t.clone() : t.to(Device::cpu());
}
}  // namespace

Snapshot take_snapshot(dist::DataParallel& dp, nn::Module& model, const TrainerState& trainer,
                       const std::string& config_toml, const std::string& model_kind) {
  const int rank = dp.comm().rank();
  Snapshot s;
  s.step = trainer.step;
  dist::TrainingStateView v = dp.training_state();
  s.weights = dist::host_parameters(dp, model, rank == 0);
  if (rank == 0) {
    s.weights_metadata = {{"format", "pt"}, {"tessera_model", model_kind}};
    s.config_toml = config_toml;
    s.trainer = trainer;
  }
  // Stage 0: every rank holds the whole (identical) state; rank 0 writes it.
  const bool sharded = dp.zero_stage() > 0;
  if (sharded || rank == 0) {
    s.optimizer_file = optimizer_file_name(rank);
    for (const auto& [name, t] : v.state) s.optimizer_buffers.emplace_back(name, host_copy(t));
    s.optimizer_metadata = {{"optimizer", v.optimizer},
                            {"steps", std::to_string(v.optimizer_steps)},
                            {"flat_numel", std::to_string(v.numel)},
                            {"begin", std::to_string(v.state_begin)},
                            {"end", std::to_string(v.state_end)}};
  }
  return s;
}

std::vector<FileEntry> write_snapshot_files(const Snapshot& s, const std::string& dir) {
  std::vector<std::string> names;
  if (!s.config_toml.empty()) {
    nn::write_safetensors(join(dir, kModelName), s.weights, s.weights_metadata);
    write_file_atomically(join(dir, kTrainerStateName), trainer_state_to_json(s.trainer));
    write_file_atomically(join(dir, kConfigName), s.config_toml);
    names = {kModelName, kTrainerStateName, kConfigName};
  }
  if (!s.optimizer_file.empty()) {
    nn::write_safetensors(join(dir, s.optimizer_file), s.optimizer_buffers, s.optimizer_metadata);
    names.push_back(s.optimizer_file);
  }
  // Checksums of what is on disk (read back from the page cache), not of what was meant.
  std::vector<FileEntry> out;
  for (const std::string& n : names) {
    FileEntry e;
    e.name = n;
    e.crc32 = crc32_of_file(join(dir, n), &e.bytes);
    out.push_back(e);
  }
  return out;
}

// ---- Writer ----

struct CheckpointWriter::Outcome {
  std::atomic<bool> done{false};
  std::vector<FileEntry> files;
  std::string error;
};

CheckpointWriter::CheckpointWriter(dist::Communicator& comm, std::string run_dir, int64_t keep)
    : comm_(comm), run_dir_(std::move(run_dir)), keep_(keep) {
  TS_CHECK(keep_ >= 1, "checkpoints: keep {} must be >= 1", keep_);
}

CheckpointWriter::~CheckpointWriter() {
  if (worker_.joinable()) worker_.join();
}

void CheckpointWriter::remove_stale_temporaries(const std::string& run_dir) {
  // Best effort, as before: a leftover that will not go must not stop the run from starting
  // (list_checkpoints still finds a set-aside checkpoint under its own name).
  try {
    const std::string dir = checkpoints_dir(run_dir);
    FileSystem& fs = file_system();
    if (fs.type(dir) != FileType::directory) return;
    std::vector<std::string> stale;
    std::vector<std::pair<std::string, std::string>> restore;
    for (const DirEntry& e : fs.list_directory(dir)) {
      if (e.name.rfind("step_", 0) != 0) continue;
      if (e.name.find(".tmp-") != std::string::npos) stale.push_back(join(dir, e.name));
      if (const size_t dot = e.name.find(".old-"); dot != std::string::npos) {
        // Set aside by a save that died before its replacement was in place: back to its
        // name if that is free, else (the replacement made it) dropped.
        const std::string named = join(dir, e.name.substr(0, dot));
        if (fs.type(named) == FileType::none)
          restore.emplace_back(join(dir, e.name), named);
        else
          stale.push_back(join(dir, e.name));
      }
    }
    for (const auto& [from, to] : restore) durable_rename(from, to);
    for (const std::string& p : stale) remove_all_quietly(p);
    if (!stale.empty()) fsync_directory(dir);
  } catch (const Error&) {
  }
}

void CheckpointWriter::start(Snapshot s, bool async) {
  TS_CHECK(!pending_, "checkpoints: a save of step {} is still pending", step_);
  pending_ = true;
  step_ = s.step;
  start_error_.clear();
  outcome_ = std::make_shared<Outcome>();
  // Rank 0 makes the temporary folder and tells the others its name (or why it could not).
  std::string mine;
  if (comm_.rank() == 0) {
    const std::string tmp = checkpoint_dir(run_dir_, s.step) + ".tmp-" + std::to_string(::getpid());
    try {
      remove_all(tmp);
      // checkpoints/ (and the run folder) durably: a power cut must not take it back later.
      // The trainer may have made the run folder without a fsync of the folder above it.
      create_directories_durably(checkpoints_dir(run_dir_));
      fsync_directory(parent_directory(run_dir_));
      file_system().create_directory(tmp);
      mine = "ok:" + tmp;
    } catch (const std::exception& e) {
      mine = fmt::format("err:cannot create checkpoint folder '{}': {}", tmp, e.what());
    }
  }
  const std::string said = comm_.all_gather_bytes(mine)[0];
  if (said.rfind("err:", 0) == 0) {
    start_error_ = said.substr(4);
    outcome_->done = true;
    return;
  }
  tmp_dir_ = said.substr(3);
  auto write = [s = std::move(s), dir = tmp_dir_, out = outcome_] {
    try {
      out->files = write_snapshot_files(s, dir);
    } catch (const std::exception& e) {
      out->error = e.what();
    }
    out->done = true;
  };
  if (async)
    worker_ = std::thread(std::move(write));
  else
    write();
}

bool CheckpointWriter::files_done() const {
  return !pending_ || outcome_->done.load();
}

SaveResult CheckpointWriter::finish() {
  TS_CHECK(pending_, "checkpoints: finish() without a save in progress");
  if (worker_.joinable()) worker_.join();
  pending_ = false;
  SaveResult r;
  r.step = step_;
  // Every rank's files (or error), gathered on every rank so all agree on the outcome.
  nlohmann::json mine;
  if (!start_error_.empty())
    mine = {{"error", start_error_}};
  else if (!outcome_->error.empty())
    mine = {{"error", fmt::format("rank {}: {}", comm_.rank(), outcome_->error)}};
  else
    mine = {{"files", manifest_to_json({step_, comm_.world_size(), outcome_->files})}};
  const std::vector<std::string> all = comm_.all_gather_bytes(mine.dump());
  std::string error;
  std::vector<FileEntry> files;
  for (const std::string& text : all) {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.contains("error")) {
      if (error.empty()) error = j["error"].get<std::string>();
      continue;
    }
    Manifest part = parse_manifest(j["files"].get<std::string>(), "(gathered file list)");
    files.insert(files.end(), part.files.begin(), part.files.end());
  }
  const std::string final_dir = checkpoint_dir(run_dir_, step_);
  std::string verdict;
  if (comm_.rank() == 0) {
    if (error.empty()) {
      try {
        std::sort(files.begin(), files.end(),
                  [](const FileEntry& a, const FileEntry& b) { return a.name < b.name; });
        write_file_atomically(join(tmp_dir_, kManifestName),
                              manifest_to_json({step_, comm_.world_size(), files}));
        fsync_directory(tmp_dir_);
        if (file_system().type(final_dir) != FileType::none) {
          // A checkpoint of this step from an earlier life of the run: set it aside first
          // (rename cannot replace a non-empty folder), drop it once the new one is in place.
          // Until then list_checkpoints still finds it under its set-aside name.
          const std::string old = final_dir + ".old-" + std::to_string(::getpid());
          remove_all(old);
          durable_rename(final_dir, old);
          durable_rename(tmp_dir_, final_dir);
          remove_all_quietly(old);  // committed: the rest is best effort
        } else {
          durable_rename(tmp_dir_, final_dir);
        }
        prune(step_);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    if (!error.empty()) remove_all_quietly(tmp_dir_);
    verdict = error;
  }
  r.error = comm_.all_gather_bytes(verdict)[0];
  r.ok = r.error.empty();
  if (r.ok) r.path = final_dir;
  return r;
}

void CheckpointWriter::prune(int64_t newest) const noexcept {
  // The new checkpoint is committed already: a failure here (a folder that would not go) is
  // not the save's, and the next save or start-up tries again.
  try {
    prune_or_throw(newest);
  } catch (const std::exception&) {
  }
}

void CheckpointWriter::prune_or_throw(int64_t newest) const {
  // Checkpoints past the one just written are from an earlier life of the run (it resumed from
  // an older one): they are stale, and counting them would delete the new one.
  std::vector<std::pair<int64_t, std::string>> kept;
  for (const auto& c : list_checkpoints(run_dir_)) {
    if (c.first > newest)
      remove_all_quietly(c.second);
    else
      kept.push_back(c);
  }
  for (size_t i = 0; i + size_t(keep_) < kept.size(); ++i) remove_all_quietly(kept[i].second);
  fsync_directory(checkpoints_dir(run_dir_));
}

}  // namespace tessera::ckpt
