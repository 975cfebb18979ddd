// Checkpoint folders (format and guarantees: docs/CHECKPOINTS.md).
//
//   RUN/checkpoints/step_00000120/
//     model.safetensors            every parameter, f32, by name (rank 0)
//     optimizer_rank<r>.safetensors  optimizer state for flat elements [begin, end) (rank r;
//                                  rank 0 alone under ZeRO stage 0, where all ranks hold all)
//     trainer_state.json           step, data cursor, RNG states, loss scale, counters, shards
//     config.toml                  the resolved config
//     manifest.json                size and CRC-32 of each file above; written last
//
// Saving writes into "step_00000120.tmp-<pid>", fsyncs every file, writes the manifest, renames
// the folder into place and fsyncs the parent: a crash at any point leaves either no new
// checkpoint or a complete one, and never touches the previous ones. Saving is collective
// (every rank of the communicator takes part, at the same step); each rank's files may be
// written on a background thread while training goes on.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ckpt/manifest.h"
#include "dist/communicator.h"
#include "dist/data_parallel.h"
#include "nn/module.h"
#include "train/config.h"

namespace tessera::ckpt {

inline constexpr const char* kModelName = "model.safetensors";
inline constexpr const char* kConfigName = "config.toml";
std::string optimizer_file_name(int rank);  // "optimizer_rank0.safetensors"

// "RUN/checkpoints" and "RUN/checkpoints/step_00000120".
std::string checkpoints_dir(const std::string& run_dir);
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

// The finished-looking checkpoint folders of a run (named step_<digits>, no temporary suffix),
// oldest first. Says nothing about whether they verify.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir);

// What one rank contributes to a checkpoint, copied out of the live training state so that
// training may continue while it is written.
struct Snapshot {
  int64_t step = 0;
  // Rank 0 only (empty elsewhere):
  nn::NamedTensors weights;
  std::map<std::string, std::string> weights_metadata;
  std::string config_toml;
  TrainerState trainer;  // written as trainer_state.json when config_toml is not empty
  // The ranks that own an optimizer shard file ("" elsewhere):
  std::string optimizer_file;
  nn::NamedTensors optimizer_buffers;
  std::map<std::string, std::string> optimizer_metadata;
};

// Copies this rank's part of the state out of the engine (collective under ZeRO-3, which
// gathers the parameters). `trainer` and `config_toml` are what rank 0 writes.
Snapshot take_snapshot(dist::DataParallel& dp, nn::Module& model, const TrainerState& trainer,
                       const std::string& config_toml, const std::string& model_kind);

// Writes a snapshot's files into `dir` (fsynced) and returns their sizes and checksums.
std::vector<FileEntry> write_snapshot_files(const Snapshot& s, const std::string& dir);

struct SaveResult {
  bool ok = false;
  int64_t step = 0;
  std::string path;   // the checkpoint folder when ok
  std::string error;  // why not, when !ok (the same text on every rank)
};

class CheckpointWriter {
 public:
  // keep: how many checkpoints to keep (older ones are deleted after each save), >= 1.
  CheckpointWriter(dist::Communicator& comm, std::string run_dir, int64_t keep);
  ~CheckpointWriter();  // waits for a background write; an unfinished save is abandoned
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Collective: makes the temporary folder (rank 0) and starts writing this rank's files, on a
  // background thread when async. One save at a time.
  void start(Snapshot s, bool async);
  bool pending() const { return pending_; }
  // Local: whether this rank's files are written (or failed). Never blocks.
  bool files_done() const;
  // Collective: waits for this rank's files; rank 0 writes the manifest, moves the folder into
  // place and deletes the oldest beyond `keep` (and any newer than this one: they are left from
  // before the run resumed from an older checkpoint). A failure on any rank fails the save on
  // all of them and removes the temporary folder; earlier checkpoints are untouched.
  SaveResult finish();

  // Rank 0: removes temporary folders that crashed saves left behind, and puts back under its
  // own name a checkpoint that a save of the same step set aside and died before replacing
  // (call at start-up). Best effort: never throws.
  static void remove_stale_temporaries(const std::string& run_dir);

 private:
  void prune(int64_t newest) const noexcept;  // best effort: the save is committed
  void prune_or_throw(int64_t newest) const;

  dist::Communicator& comm_;
  std::string run_dir_;
  int64_t keep_;
  bool pending_ = false;
  int64_t step_ = 0;
  std::string tmp_dir_;
  std::string start_error_;
  std::thread worker_;
  struct Outcome;
  std::shared_ptr<Outcome> outcome_;
};

// ---- Loading ----

struct VerifiedCheckpoint {
  std::string dir;
  Manifest manifest;
  TrainerState state;
  train::Config config;
};

// Checks a checkpoint folder completely: the manifest parses; every file it lists exists with
// that size and CRC-32; the model, trainer state, config and every optimizer shard are listed;
// trainer_state.json and config.toml parse and agree with the manifest. With `current`, the
// keys that define the model, data and optimisation must equal the current config's (see
// resumable_key). Throws an Error naming the file and what is wrong. Without `checksums` the
// file sizes are checked but not their contents (ranks other than the one that verified).
VerifiedCheckpoint verify_checkpoint(const std::string& dir, const train::Config* current,
                                     bool checksums = true);

// Keys that may change when a run resumes: how it is laid out over ranks and threads, how
// often it logs, evaluates, samples and saves. Every other key must match the checkpoint.
bool resumable_key(std::string_view key);

// The newest checkpoint of the run that verifies; each newer one that does not is reported
// through `rejected` (its error). Nothing when there is none.
std::optional<VerifiedCheckpoint> find_latest_checkpoint(
    const std::string& run_dir, const train::Config* current,
    const std::function<void(const std::string& error)>& rejected);

// Copies the checkpoint's weights into the flat values this rank holds, and its optimizer
// state into this rank's optimizer range, re-cutting the saved shards (any world size and
// ZeRO stage to any other). The files are parsed defensively; every tensor's name, dtype and
// shape must match the engine's layout. Nothing is modified unless everything checks out
// for this rank.
void load_into(const VerifiedCheckpoint& ckpt, dist::DataParallel& dp);

}  // namespace tessera::ckpt
