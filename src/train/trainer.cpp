#include "train/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/allocator.h"
#include "nn/weights.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "train/metrics.h"
#include "train/plot.h"
#include "train/task.h"

namespace tessera::train {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

DType compute_dtype(const Config& cfg) {
  const std::string& p = cfg.train.precision;
  if (p == "bf16") return DType::bf16;
  TS_CHECK(p != "fp16",
           "config: train.precision = \"fp16\" needs the CUDA backend (fp16 GEMMs with loss "
           "scaling); on the CPU use \"bf16\" or \"f32\"");
  return DType::f32;
}

std::unique_ptr<Optimizer> make_optimizer(const Config& cfg, FlatParameters& flat) {
  if (cfg.optim.name == "sgd") {
    SGDOptions o;
    o.momentum = float(cfg.optim.momentum);
    o.weight_decay = float(cfg.optim.weight_decay);
    return std::make_unique<SGD>(flat, o);
  }
  AdamWOptions o;
  o.beta1 = float(cfg.optim.beta1), o.beta2 = float(cfg.optim.beta2);
  o.eps = float(cfg.optim.eps), o.weight_decay = float(cfg.optim.weight_decay);
  return std::make_unique<AdamW>(flat, o);
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p);
  f << s;
  TS_CHECK(f.good(), "cannot write '{}'", p.string());
}

}  // namespace

RunSummary run_training(const Config& cfg, const RunOptions& opt) {
  validate(cfg, "config");
  if (cfg.train.threads > 0) omp_set_num_threads(int(cfg.train.threads));
  const DType compute = compute_dtype(cfg);
  const fs::path dir(opt.out_dir);
  fs::create_directories(dir);
  fs::remove(dir / "metrics.jsonl");  // a fresh run owns its folder's metrics
  write_text(dir / "config.toml", to_toml(cfg));

  std::unique_ptr<Task> task = make_task(cfg);
  nn::Module& model = task->model();
  FlatParameters flat(model.parameters());
  std::unique_ptr<Optimizer> optimizer = make_optimizer(cfg, flat);
  ScheduleOptions so;
  so.kind = parse_schedule_kind(cfg.optim.schedule);
  so.lr = cfg.optim.lr, so.min_lr = cfg.optim.min_lr;
  so.warmup_steps = cfg.optim.warmup_steps, so.total_steps = cfg.train.steps;
  LRSchedule schedule(so);

  MetricsWriter metrics((dir / "metrics.jsonl").string());
  ProgressLine progress(cfg.train.steps, opt.console);
  progress.message(fmt::format(
      "tessera: training {} ({} parameters) on {} for {} steps, {} precision, {} threads -> {}",
      cfg.model.kind, flat.param_numel(), cfg.data.path, cfg.train.steps, cfg.train.precision,
      omp_get_max_threads(), dir.string()));

  RunSummary sum;
  const int64_t micro = cfg.train.micro_batches;
  auto run_start = Clock::now();
  Clock::time_point timed_start;
  int64_t skipped = 0;
  for (int64_t step = 0; step < cfg.train.steps; ++step) {
    if (step == 1) timed_start = Clock::now();  // the first step builds primitives: untimed
    auto t0 = Clock::now();
    const double lr = schedule.lr(step);
    flat.zero_grad();
    task->next_batch();
    double loss = 0;
    {
      AutocastGuard autocast(compute);
      for (int64_t i = 0; i < micro; ++i) {
        Tensor l = task->micro_loss(i, micro);
        loss += double(l.item()) / double(micro);
        (micro == 1 ? l : ops::scale(l, 1.f / float(micro))).backward();
      }
    }
    const double gnorm = cfg.optim.grad_clip > 0 ? clip_grad_norm(flat, cfg.optim.grad_clip)
                                                 : grad_norm(flat);
    if (std::isfinite(loss) && std::isfinite(gnorm)) {
      optimizer->step(float(lr));
    } else {
      ++skipped;
      progress.message(fmt::format("step {}: non-finite loss {} or gradient norm {}: skipped",
                                   step + 1, loss, gnorm));
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const double rate = double(task->items_per_step()) / (ms / 1e3);
    sum.final_loss = loss;
    sum.steps = step + 1;

    const bool last = step + 1 == cfg.train.steps;
    const bool log = last || (cfg.train.log_every > 0 && (step + 1) % cfg.train.log_every == 0);
    const bool eval = last || (cfg.train.eval_every > 0 && (step + 1) % cfg.train.eval_every == 0);
    nlohmann::json rec;
    if (log || eval) {
      rec = {{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
             {"ms_per_step", ms}, {task->rate_key(), rate}};
      progress.update(step + 1, loss, lr, rate, task->rate_unit(), ms);
    }
    if (eval) {
      nlohmann::json e = task->evaluate();
      std::string text;
      for (auto& [k, v] : e.items()) rec[k] = v, text += fmt::format(" {} {:.4f}", k, v.get<double>());
      if (!e.empty()) progress.message(fmt::format("step {}:{}", step + 1, text));
      sum.last_eval = e;
    }
    if (cfg.train.sample_every > 0 && ((step + 1) % cfg.train.sample_every == 0 || last)) {
      std::string s = task->sample(cfg.train.sample_tokens);
      if (!s.empty()) progress.message(fmt::format("--- sample at step {} ---\n{}\n---", step + 1, s));
    }
    if (!rec.is_null()) metrics.write(rec);
  }
  progress.finish();
  auto end = Clock::now();
  sum.seconds = std::chrono::duration<double>(end - run_start).count();
  if (cfg.train.steps > 1) {
    const double timed = std::chrono::duration<double>(end - timed_start).count();
    sum.items_per_s = double(task->items_per_step() * (cfg.train.steps - 1)) / timed;
  }

  nn::save_weights(model, (dir / "model.safetensors").string(),
                   {{"format", "pt"}, {"tessera_model", cfg.model.kind}});
  std::string summary = fmt::format(
      "tessera: done: {} steps in {}, final loss {:.4f}, {} {}", sum.steps,
      format_duration(sum.seconds), sum.final_loss, format_si(sum.items_per_s), task->rate_unit());
  for (auto& [k, v] : sum.last_eval.items()) summary += fmt::format(", {} {:.4f}", k, v.get<double>());
  if (skipped) summary += fmt::format(", {} steps skipped (non-finite)", skipped);
  const AllocatorStats mem = allocator_for(Device::cpu()).stats();
  summary += fmt::format(", peak tensor memory {:.1f} MiB", double(mem.peak_in_use) / (1 << 20));
  progress.message(summary);
  if (opt.plot) progress.message("curves: " + plot_run(dir.string()));
  return sum;
}

}  // namespace tessera::train
