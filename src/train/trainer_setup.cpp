#include "train/trainer_setup.h"

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "core/file_system.h"
#include "optim/adamw.h"

namespace tessera::train {

namespace fs = std::filesystem;

DType compute_dtype(const Config& cfg) {
  const std::string& p = cfg.train.precision;
  if (p == "bf16") return DType::bf16;
  if (p == "fp16") return DType::f16;
  return DType::f32;
}

LossScalerOptions loss_scaler_options(const Config& cfg) {
  LossScalerOptions o;
  o.enabled = cfg.train.precision == "fp16";
  o.init_scale = float(cfg.train.loss_scale);
  o.growth_interval = cfg.train.loss_scale_window;
  o.min_scale = std::min(o.min_scale, o.init_scale);
  return o;
}

dist::DataParallelOptions parallel_options(const Config& cfg) {
  dist::DataParallelOptions o;
  o.zero_stage = int(cfg.parallel.zero_stage);
  o.bucket_mb = cfg.parallel.bucket_mb;
  o.optimizer.name = cfg.optim.name;
  o.optimizer.sgd.momentum = float(cfg.optim.momentum);
  o.optimizer.sgd.weight_decay = float(cfg.optim.weight_decay);
  AdamWOptions& a = o.optimizer.adamw;
  a.beta1 = float(cfg.optim.beta1), a.beta2 = float(cfg.optim.beta2);
  a.eps = float(cfg.optim.eps), a.weight_decay = float(cfg.optim.weight_decay);
  return o;
}

ScheduleOptions schedule_options(const Config& cfg) {
  ScheduleOptions so;
  so.kind = parse_schedule_kind(cfg.optim.schedule);
  so.lr = cfg.optim.lr, so.min_lr = cfg.optim.min_lr;
  so.warmup_steps = cfg.optim.warmup_steps, so.total_steps = cfg.train.steps;
  return so;
}

dist::pipeline::ScheduleKind pipeline_kind(const std::string& name) {
  using dist::pipeline::ScheduleKind;
  if (name == "interleaved_1f1b") return ScheduleKind::interleaved_1f1b;
  if (name == "gpipe") return ScheduleKind::gpipe;
  TS_CHECK(name == "1f1b",
           "parallel.pp_schedule = \"{}\": expected \"1f1b\", "
           "\"interleaved_1f1b\" or \"gpipe\"",
           name);
  return ScheduleKind::one_f_one_b;
}

dist::Entries job_identity(const Config& cfg) {
  dist::Entries e;
  for (const ConfigKey& key : config_keys()) {
    const ConfigValue v = key.get(cfg);
    e.emplace_back(std::string(key.name), config_value_text(v));
  }
  return e;
}

dist::Entries parameter_identity(nn::Module& model, const std::vector<nn::TensorShard>& shards) {
  dist::Entries e;
  const nn::NamedTensors params = model.named_parameters();
  for (size_t i = 0; i < params.size(); ++i)
    e.emplace_back("model parameter " + params[i].first,
                   (i < shards.size() ? shards[i].global : params[i].second.shape()).str());
  return e;
}

dist::Entries job_identity(const Config& cfg, nn::Module& model,
                           const std::vector<nn::TensorShard>& shards) {
  dist::Entries e = job_identity(cfg);
  for (auto& entry : parameter_identity(model, shards)) e.push_back(std::move(entry));
  return e;
}

void write_text(const fs::path& p, const std::string& s) {
  write_file_atomically(p.string(), s);
}

void keep_metrics_up_to(const fs::path& path, int64_t step) {
  if (file_system().type(path.string()) != FileType::file) return;
  const std::string text = read_small_file(path.string(), UINT64_MAX);
  std::string kept;
  for (size_t from = 0; from < text.size();) {
    const size_t eol = std::min(text.find('\n', from), text.size());
    const std::string_view line(text.data() + from, eol - from);
    from = eol + 1;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() <= step)
      kept.append(line).append("\n");
  }
  write_file_atomically(path.string(), kept);
}

namespace {

// Rank 0's choice: "ok:<folder>", "" for a fresh start, or "err:<why the run stops>".
std::string choose_checkpoint(const Config& cfg, const std::string& resume,
                              const std::string& out_dir, ProgressLine& progress) {
  try {
    if (resume != "latest") return "ok:" + ckpt::verify_checkpoint(resume, &cfg).dir;
    std::vector<std::string> rejected;
    auto c = ckpt::find_latest_checkpoint(out_dir, &cfg, [&](const std::string& e) {
      rejected.push_back(e);
      progress.message("tessera: skipping a checkpoint that does not verify: " + e);
    });
    if (c) return "ok:" + c->dir;
    if (!rejected.empty())
      return fmt::format("err:--resume latest: no checkpoint in '{}' verifies: {}",
                         ckpt::checkpoints_dir(out_dir), fmt::join(rejected, "; "));
    progress.message(
        fmt::format("tessera: --resume latest: '{}' has no checkpoint yet; starting afresh",
                    ckpt::checkpoints_dir(out_dir)));
    return "";
  } catch (const std::exception& e) {
    return std::string("err:") + e.what();
  }
}

}  // namespace

std::optional<ckpt::VerifiedCheckpoint> resolve_resume(const Config& cfg, const std::string& resume,
                                                       const std::string& out_dir,
                                                       dist::Communicator& comm,
                                                       ProgressLine& progress) {
  if (resume.empty()) return std::nullopt;
  std::string said = comm.rank() == 0 ? choose_checkpoint(cfg, resume, out_dir, progress) : "";
  said = comm.all_gather_bytes(said)[0];
  if (said.empty()) return std::nullopt;
  TS_CHECK(said.rfind("err:", 0) != 0, "{}", said.substr(4));
  // Rank 0 checked every byte; the others check sizes and parse the small files themselves.
  return ckpt::verify_checkpoint(said.substr(3), &cfg, /*checksums=*/comm.rank() == 0);
}

}  // namespace tessera::train
