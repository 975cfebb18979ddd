// Verifying a checkpoint folder, choosing the one to resume from, and restoring an engine's
// state from it (re-cutting the saved shards for this run's ranks).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "ckpt/checkpoint.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/file_system.h"
#include "nn/safetensors.h"

namespace tessera::ckpt {

namespace fs = std::filesystem;

namespace {

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// The saved config against the current one: every key that is not resumable must be equal.
void check_same_run(const train::Config& saved, const train::Config& now, const std::string& file) {
  std::string diffs;
  for (const train::ConfigKey& key : train::config_keys()) {
    if (resumable_key(key.name)) continue;
    const train::ConfigValue a = key.get(saved), b = key.get(now);
    if (a == b) continue;
    diffs += fmt::format("{}{} is {} in the checkpoint but {} now", diffs.empty() ? "" : "; ",
                         key.name, train::config_value_text(a), train::config_value_text(b));
  }
  TS_CHECK(diffs.empty(),
           "checkpoint file '{}': the config changed since the checkpoint: {}. A resumed run "
           "keeps the keys that define the model, data and optimisation (only the layout over "
           "ranks, threads and micro-batches, the device, recomputation, the initial weights "
           "file and how often it logs, evaluates, samples and saves may change); start a new "
           "run folder to train with different values",
           file, diffs);
}

// Checks a safetensors file's metadata entry against the trainer state.
void expect_meta(const nn::SafetensorsFile& f, const std::string& key, const std::string& want,
                 const std::string& file) {
  auto it = f.metadata.find(key);
  TS_CHECK(it != f.metadata.end() && it->second == want,
           "checkpoint file '{}': metadata '{}' is {}, expected \"{}\" (as trainer_state.json "
           "says)",
           file, key, it == f.metadata.end() ? std::string("missing") : "\"" + it->second + "\"",
           want);
}

}  // namespace

bool resumable_key(std::string_view key) {
  static const std::set<std::string_view> keys = {
      "train.micro_batches",
      "train.eval_every",
      "train.eval_batches",
      "train.log_every",
      "train.sample_every",
      "train.sample_tokens",
      "train.checkpoint_every",
      "train.checkpoint_keep",
      "train.checkpoint_async",
      "train.max_bad_steps",
      "train.threads",
      "parallel.zero_stage",
      "parallel.bucket_mb",
      "parallel.timeout_s",
      "parallel.slow_rank_factor",
      "train.device",
      "train.peak_tflops",
      "model.recompute",
      "model.init_weights",
      "parallel.tp",
      "parallel.pp",
      "parallel.cp",
      "parallel.sequence_parallel",
      "parallel.pp_schedule",
      "parallel.pp_virtual_stages",
  };
  return keys.count(key) > 0;
}

VerifiedCheckpoint verify_checkpoint(const std::string& dir, const train::Config* current,
                                     bool checksums) {
  VerifiedCheckpoint c;
  c.dir = dir;
  const std::string manifest_path = join(dir, kManifestName);
  TS_CHECK(file_system().type(manifest_path) == FileType::file,
           "checkpoint '{}': file '{}' is missing (the save did not finish)", dir, manifest_path);
  const std::string manifest_text = read_small_file(manifest_path, kMaxJsonBytes);
  c.manifest = parse_manifest(manifest_text, manifest_path);
  for (const FileEntry& f : c.manifest.files) {
    const std::string path = join(dir, f.name);
    TS_CHECK(file_system().type(path) == FileType::file,
             "checkpoint file '{}' is missing (manifest.json lists it with {} bytes)", path,
             f.bytes);
    const uint64_t size = file_size(path);
    TS_CHECK(size == f.bytes,
             "checkpoint file '{}' has {} bytes, but manifest.json says {} (truncated or "
             "overwritten)",
             path, size, f.bytes);
    if (!checksums) continue;
    uint64_t read = 0;
    const uint32_t crc = crc32_of_file(path, &read);
    TS_CHECK(crc == f.crc32 && read == f.bytes,
             "checkpoint file '{}': CRC-32 {:08x} does not match {:08x} in manifest.json (the "
             "file is corrupt)",
             path, crc, f.crc32);
  }
  for (const char* required : {kModelName, kTrainerStateName, kConfigName})
    TS_CHECK(c.manifest.find(required),
             "checkpoint file '{}' does not list '{}', which every checkpoint has", manifest_path,
             required);
  const std::string state_path = join(dir, kTrainerStateName);
  c.state = parse_trainer_state(read_small_file(state_path, kMaxJsonBytes), state_path);
  TS_CHECK(c.state.step == c.manifest.step && c.state.world_size == c.manifest.world_size,
           "checkpoint file '{}' is for step {} on {} ranks, but manifest.json says step {} on {}",
           state_path, c.state.step, c.state.world_size, c.manifest.step, c.manifest.world_size);
  for (const OptimizerShard& s : c.state.optimizer_shards)
    TS_CHECK(c.manifest.find(s.file),
             "checkpoint file '{}' names optimizer shard '{}', which manifest.json does not list",
             state_path, s.file);
  const std::string config_path = join(dir, kConfigName);
  c.config = train::parse_config(read_small_file(config_path, kMaxJsonBytes), config_path);
  if (current) check_same_run(c.config, *current, config_path);
  // Nothing checksums the manifest itself: it must be exactly the bytes a save writes for what
  // it says, so a damaged one that still means the same (a lost final newline) is refused too.
  // Last, so that a manifest that lies gets the more precise errors above.
  TS_CHECK(manifest_to_json(c.manifest) == manifest_text,
           "checkpoint file '{}' parses but is not the bytes a save writes for it (edited or "
           "damaged)",
           manifest_path);
  return c;
}

std::optional<VerifiedCheckpoint> find_latest_checkpoint(
    const std::string& run_dir, const train::Config* current,
    const std::function<void(const std::string& error)>& rejected) {
  std::vector<std::pair<int64_t, std::string>> all = list_checkpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return verify_checkpoint(it->second, current);
    } catch (const Error& e) {
      if (rejected) rejected(e.what());
    }
  }
  return std::nullopt;
}

void load_into(const VerifiedCheckpoint& ckpt, dist::DataParallel& dp) {
  dist::TrainingStateView v = dp.training_state();
  const TrainerState& st = ckpt.state;
  const std::string state_path = join(ckpt.dir, kTrainerStateName);
  TS_CHECK(st.optimizer == v.optimizer && st.flat_numel == v.numel,
           "checkpoint file '{}': optimizer '{}' over {} flat elements, but this run has '{}' "
           "over {} (a different optimizer or model)",
           state_path, st.optimizer, st.flat_numel, v.optimizer, v.numel);

  // Weights: every parameter by name, exactly its shape, f32; nothing else in the file.
  const std::string model_path = join(ckpt.dir, kModelName);
  nn::SafetensorsFile model = nn::read_safetensors(model_path);
  std::vector<std::string> problems;
  for (const ParamSegment& s : v.segments) {
    auto it = model.tensors.find(s.name);
    if (it == model.tensors.end())
      problems.push_back(fmt::format("'{}' is missing", s.name));
    else if (it->second.dtype() != DType::f32 || it->second.shape() != s.shape)
      problems.push_back(
          fmt::format("'{}' is {}, expected f32 {}", s.name, it->second.desc(), s.shape.str()));
  }
  if (model.tensors.size() != v.segments.size())
    problems.push_back(fmt::format("it holds {} tensors, the model has {} parameters",
                                   model.tensors.size(), v.segments.size()));
  TS_CHECK(problems.empty(), "checkpoint file '{}' does not fit this model: {}", model_path,
           fmt::join(problems, "; "));

  // Optimizer state: the saved shards overlapping this rank's range, checked before use.
  std::vector<std::pair<const OptimizerShard*, nn::SafetensorsFile>> shards;
  for (const OptimizerShard& s : st.optimizer_shards) {
    if (s.end <= v.state_begin || s.begin >= v.state_end || s.begin == s.end) continue;
    const std::string path = join(ckpt.dir, s.file);
    nn::SafetensorsFile f = nn::read_safetensors(path);
    expect_meta(f, "optimizer", st.optimizer, path);
    expect_meta(f, "flat_numel", std::to_string(st.flat_numel), path);
    expect_meta(f, "begin", std::to_string(s.begin), path);
    expect_meta(f, "end", std::to_string(s.end), path);
    TS_CHECK(f.tensors.size() == v.state.size(),
             "checkpoint file '{}' holds {} state buffers, expected {} for {}", path,
             f.tensors.size(), v.state.size(), st.optimizer);
    for (const auto& [name, mine] : v.state) {
      auto it = f.tensors.find(name);
      TS_CHECK(it != f.tensors.end(), "checkpoint file '{}': state buffer '{}' is missing", path,
               name);
      TS_CHECK(it->second.dtype() == DType::f32 && it->second.shape() == Shape{s.end - s.begin},
               "checkpoint file '{}': state buffer '{}' is {}, expected f32 [{}]", path, name,
               it->second.desc(), s.end - s.begin);
    }
    shards.emplace_back(&s, std::move(f));
  }

  // Everything checked: copy the overlaps in (through host buffers when training on a GPU).
  auto host_view = [](const Tensor& t) { return t.device().is_cpu() ? t : t.to(Device::cpu()); };
  Tensor host_values = host_view(v.values);
  const int64_t vb = v.values_begin, ve = v.values_begin + v.values.numel();
  float* values = host_values.data<float>();
  for (const ParamSegment& s : v.segments) {
    const int64_t a = std::max(s.offset, vb), b = std::min(s.offset + s.numel, ve);
    if (a >= b) continue;
    const float* src = model.tensors.at(s.name).data<float>();
    std::memcpy(values + (a - vb), src + (a - s.offset), size_t(b - a) * sizeof(float));
  }
  if (!v.values.device().is_cpu()) v.values.copy_from(host_values);
  for (const auto& [name, mine] : v.state) {
    Tensor host_state = host_view(mine);
    for (const auto& [s, f] : shards) {
      const int64_t a = std::max(s->begin, v.state_begin), b = std::min(s->end, v.state_end);
      if (a >= b) continue;
      const float* src = f.tensors.at(name).data<float>();
      std::memcpy(host_state.data<float>() + (a - v.state_begin), src + (a - s->begin),
                  size_t(b - a) * sizeof(float));
    }
    if (!mine.device().is_cpu()) Tensor(mine).copy_from(host_state);
  }
  dp.set_optimizer_steps(st.optimizer_steps);
}

}  // namespace tessera::ckpt
