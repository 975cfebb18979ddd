// The two JSON files of a checkpoint folder (docs/CHECKPOINTS.md), as plain structs with a
// serialiser and a parser each:
//   manifest.json       every other file of the folder with its byte size and CRC-32; written
//                       last, so a folder without a valid manifest is never a checkpoint.
//   trainer_state.json  what resumes the loop exactly: step, data cursor, RNG states, loss
//                       scale, bad-step counters, and where the optimizer state shards lie in
//                       the flat parameter layout.
// The parsers are pure functions of the bytes (no file access, nothing executed), bounded in
// size and nesting, and check every field's type and range; every error is a tessera::Error
// naming the file (path_for_messages) and the field. The fuzz targets in fuzz/ call them.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::ckpt {

inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kTrainerStateName = "trainer_state.json";
inline constexpr const char* kFormat = "tessera-checkpoint";
inline constexpr int64_t kFormatVersion = 1;
// Larger files are refused before parsing (a real one is a few KiB).
inline constexpr size_t kMaxJsonBytes = 1 << 20;

struct FileEntry {
  std::string name;  // a plain file name inside the folder (no '/', not "." or "..")
  uint64_t bytes = 0;
  uint32_t crc32 = 0;  // zlib's CRC-32 of the whole file
  bool operator==(const FileEntry&) const = default;
};

struct Manifest {
  int64_t step = 0;              // optimizer-loop steps completed when the checkpoint was taken
  int world_size = 1;            // ranks that wrote it
  std::vector<FileEntry> files;  // sorted by name, unique
  bool operator==(const Manifest&) const = default;
  const FileEntry* find(std::string_view name) const;
};

// A counter-based generator's or a batcher's position (core/rng.h, data/loader.h).
struct StreamState {
  uint64_t seed = 0;
  uint64_t offset = 0;
  bool operator==(const StreamState&) const = default;
};

// One rank's file of optimizer state: elements [begin, end) of the flat layout.
struct OptimizerShard {
  std::string file;
  int64_t begin = 0;
  int64_t end = 0;
  bool operator==(const OptimizerShard&) const = default;
};

struct TrainerState {
  int64_t step = 0;  // loop steps completed (skipped ones included); the next step is `step`
  int world_size = 1;
  int zero_stage = 0;
  StreamState data;                         // the batcher after the last consumed batch
  std::map<std::string, StreamState> rngs;  // "dropout", "sample", ...
  double loss_scale = 1;                    // dynamic loss scale (1 without one)
  int64_t loss_scale_clean_steps = 0;
  int64_t loss_scale_skipped_steps = 0;  // steps the scaler skipped (inf/NaN gradients)
  int64_t bad_steps_total = 0;           // steps skipped for a non-finite loss/gradient
  int64_t bad_steps_in_a_row = 0;
  double last_lr = 0;  // the learning rate of step `step` - 1
  // Sample accounting's run digest after `step` steps (train/sample_account.h); absent in
  // checkpoints written before it existed.
  std::optional<uint64_t> samples_digest;
  std::string optimizer;                         // "adamw" | "sgd"
  int64_t optimizer_steps = 0;                   // updates applied (skipped steps excluded)
  int64_t flat_numel = 0;                        // elements of the flat parameter layout
  std::vector<OptimizerShard> optimizer_shards;  // tile [0, flat_numel) in order
  bool operator==(const TrainerState&) const = default;
};

std::string manifest_to_json(const Manifest& m);
Manifest parse_manifest(std::string_view text, const std::string& path_for_messages);

std::string trainer_state_to_json(const TrainerState& s);
TrainerState parse_trainer_state(std::string_view text, const std::string& path_for_messages);

// Whether `name` may name a file of a checkpoint folder: 1-255 characters of [A-Za-z0-9._-],
// not starting with '.'.
bool is_safe_file_name(std::string_view name);

}  // namespace tessera::ckpt
