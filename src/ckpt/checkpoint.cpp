#include "ckpt/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
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

}  // namespace

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  const fs::path dir = checkpoints_dir(run_dir);
  if (!fs::is_directory(dir, ec)) return out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const int64_t step = parse_step_name(e.path().filename().string());
    if (step >= 0 && e.is_directory(ec)) out.emplace_back(step, e.path().string());
  }
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
  dp.gather_all();
  if (rank == 0) {
    for (const auto& [name, p] : model.named_parameters())
      s.weights.emplace_back(name, host_copy(p));
    s.weights_metadata = {{"format", "pt"}, {"tessera_model", model_kind}};
    s.config_toml = config_toml;
    s.trainer = trainer;
  }
  dp.release_all();
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
  std::error_code ec;
  const fs::path dir = checkpoints_dir(run_dir);
  if (!fs::is_directory(dir, ec)) return;
  std::vector<fs::path> stale;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && name.find(".tmp-") != std::string::npos)
      stale.push_back(e.path());
  }
  for (const fs::path& p : stale) fs::remove_all(p, ec);
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
      std::error_code ec;
      fs::remove_all(tmp, ec);
      fs::create_directories(tmp);
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
    std::error_code ec;
    if (error.empty()) {
      try {
        std::sort(files.begin(), files.end(),
                  [](const FileEntry& a, const FileEntry& b) { return a.name < b.name; });
        write_file_atomically(join(tmp_dir_, kManifestName),
                              manifest_to_json({step_, comm_.world_size(), files}));
        fsync_directory(tmp_dir_);
        if (fs::exists(final_dir, ec)) {
          // A checkpoint of this step from an earlier life of the run: set it aside first
          // (rename cannot replace a non-empty folder), drop it once the new one is in place.
          const std::string old = final_dir + ".old-" + std::to_string(::getpid());
          fs::remove_all(old, ec);
          durable_rename(final_dir, old);
          durable_rename(tmp_dir_, final_dir);
          fs::remove_all(old, ec);
        } else {
          durable_rename(tmp_dir_, final_dir);
        }
        prune(step_);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    if (!error.empty()) fs::remove_all(tmp_dir_, ec);
    verdict = error;
  }
  r.error = comm_.all_gather_bytes(verdict)[0];
  r.ok = r.error.empty();
  if (r.ok) r.path = final_dir;
  return r;
}

void CheckpointWriter::prune(int64_t newest) const {
  // Checkpoints past the one just written are from an earlier life of the run (it resumed from
  // an older one): they are stale, and counting them would delete the new one.
  std::vector<std::pair<int64_t, std::string>> kept;
  std::error_code ec;
  for (const auto& c : list_checkpoints(run_dir_)) {
    if (c.first > newest)
      fs::remove_all(c.second, ec);
    else
      kept.push_back(c);
  }
  for (size_t i = 0; i + size_t(keep_) < kept.size(); ++i) fs::remove_all(kept[i].second, ec);
  fsync_directory(checkpoints_dir(run_dir_));
}

}  // namespace tessera::ckpt
