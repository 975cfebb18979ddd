#include "train/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <variant>

#include "core/allocator.h"
#include "dist/consistency.h"
#include "dist/world.h"
#include "nn/weights.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
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

// What every rank must agree on: each config key's value and each parameter's name and shape.
dist::Entries job_identity(const Config& cfg, nn::Module& model) {
  dist::Entries e;
  for (const ConfigKey& key : config_keys()) {
    const ConfigValue v = key.get(cfg);
    std::string text = std::visit(
        [](const auto& x) {
          if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::string>)
            return "\"" + x + "\"";
          else
            return fmt::format("{}", x);
        },
        v);
    e.emplace_back(std::string(key.name), std::move(text));
  }
  for (const auto& [name, t] : model.named_parameters())
    e.emplace_back("model parameter " + name, t.shape().str());
  return e;
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
  std::shared_ptr<dist::Communicator> comm = opt.comm;
  if (!comm) {
    dist::MpiOptions mo;
    mo.timeout_s = cfg.parallel.timeout_s;
    comm = dist::communicator_for_launch(dist::detect_launch(), mo);
  }
  const int rank = comm->rank(), world = comm->world_size();
  const bool lead = rank == 0;
  const int64_t micro = cfg.train.micro_batches;
  TS_CHECK(cfg.train.batch_size % (int64_t(world) * micro) == 0,
           "config: train.batch_size = {} does not split evenly over {} ranks x "
           "train.micro_batches = {}: every rank's micro-batches must have equal rows, so that "
           "averaging over ranks gives the single-process gradient",
           cfg.train.batch_size, world, micro);

  const fs::path dir(opt.out_dir);
  fs::create_directories(dir);
  if (lead) {
    fs::remove(dir / "metrics.jsonl");  // a fresh run owns its folder's metrics
    write_text(dir / "config.toml", to_toml(cfg));
  }
  // Only rank 0 talks; the others print nothing but errors.
  std::unique_ptr<FILE, int (*)(FILE*)> devnull(lead ? nullptr : std::fopen("/dev/null", "w"),
                                                &std::fclose);
  FILE* console = lead ? opt.console : devnull.get();
  TS_CHECK(console, "cannot open /dev/null for rank {}'s console", rank);

  std::unique_ptr<Task> task = make_task(cfg, TaskPlacement{rank, world});
  nn::Module& model = task->model();
  dist::check_same_on_all_ranks(*comm, job_identity(cfg, model), "config");
  // Every rank initialised from the same seed; rank 0's values make that exact regardless.
  if (world > 1)
    for (const Tensor& p : model.parameters()) comm->broadcast(p, 0);
  dist::Tracer tracer(rank, world > 1 || opt.trace);
  tracer.name_track(0, "training thread");
  const dist::ParameterUnits units =
      cfg.parallel.zero_stage == 3 ? task->parameter_units() : dist::ParameterUnits{};
  std::unique_ptr<dist::DataParallel> dp =
      dist::make_data_parallel(model, *comm, parallel_options(cfg), &tracer, units);
  task->set_parameter_gather(dp->gather());
  ScheduleOptions so;
  so.kind = parse_schedule_kind(cfg.optim.schedule);
  so.lr = cfg.optim.lr, so.min_lr = cfg.optim.min_lr;
  so.warmup_steps = cfg.optim.warmup_steps, so.total_steps = cfg.train.steps;
  LRSchedule schedule(so);

  std::optional<MetricsWriter> metrics;
  if (lead) metrics.emplace((dir / "metrics.jsonl").string());
  ProgressLine progress(cfg.train.steps, console);
  progress.message(fmt::format(
      "tessera: training {} ({} parameters) on {} for {} steps, {} precision, {} threads -> {}",
      cfg.model.kind, dp->param_numel(), cfg.data.path, cfg.train.steps, cfg.train.precision,
      omp_get_max_threads(), dir.string()));
  if (world > 1)
    progress.message(fmt::format("tessera: {} ranks over {}, ZeRO stage {}, {} rows per rank",
                                 world, comm->describe(), cfg.parallel.zero_stage,
                                 cfg.train.batch_size / world));

  RunSummary sum;
  sum.world_size = world;
  sum.memory = dp->memory();
  auto run_start = Clock::now();
  Clock::time_point timed_start;
  int64_t skipped = 0;
  for (int64_t step = 0; step < cfg.train.steps; ++step) {
    if (step == 1) timed_start = Clock::now();  // the first step builds primitives: untimed
    tracer.set_step(step);
    auto t0 = Clock::now();
    const double lr = schedule.lr(step);
    dp->zero_grad();
    task->next_batch();
    double loss = 0;
    {
      AutocastGuard autocast(compute);
      for (int64_t i = 0; i < micro; ++i) {
        dp->begin_micro_batch(i + 1 == micro);
        Tensor l;
        {
          dist::ScopedSpan span(&tracer, "forward");
          l = task->micro_loss(i, micro);
        }
        loss += double(l.item()) / double(micro);
        dist::ScopedSpan span(&tracer, "backward");
        (micro == 1 ? l : ops::scale(l, 1.f / float(micro))).backward();
      }
    }
    dp->finish_backward();
    if (world > 1) loss = comm->average_f64(loss);
    const double gnorm = dp->clip_grad_norm(cfg.optim.grad_clip);
    if (std::isfinite(loss) && std::isfinite(gnorm)) {
      dp->step(float(lr));
    } else {
      ++skipped;
      progress.message(fmt::format("step {}: non-finite loss {} or gradient norm {}: skipped",
                                   step + 1, loss, gnorm));
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const double rate = double(task->items_per_step()) / (ms / 1e3);
    sum.final_loss = loss;
    sum.losses.push_back(loss);
    sum.steps = step + 1;

    const bool last = step + 1 == cfg.train.steps;
    const bool log = last || (cfg.train.log_every > 0 && (step + 1) % cfg.train.log_every == 0);
    const bool eval = last || (cfg.train.eval_every > 0 && (step + 1) % cfg.train.eval_every == 0);
    nlohmann::json rec;
    if (log || eval) {
      rec = {{"step", step + 1},   {"loss", loss},      {"lr", lr},
             {"grad_norm", gnorm}, {"ms_per_step", ms}, {task->rate_key(), rate}};
      progress.update(step + 1, loss, lr, rate, task->rate_unit(), ms);
    }
    // Every rank evaluates and samples (ZeRO-3 needs them all to gather the parameters); the
    // results are identical, rank 0 reports them.
    if (eval) {
      dp->gather_all();
      nlohmann::json e = task->evaluate();
      dp->release_all();
      std::string text;
      for (auto& [k, v] : e.items())
        rec[k] = v, text += fmt::format(" {} {:.4f}", k, v.get<double>());
      if (!e.empty()) progress.message(fmt::format("step {}:{}", step + 1, text));
      sum.last_eval = e;
    }
    if (cfg.train.sample_every > 0 && ((step + 1) % cfg.train.sample_every == 0 || last)) {
      dp->gather_all();
      std::string s = task->sample(cfg.train.sample_tokens);
      dp->release_all();
      if (!s.empty())
        progress.message(fmt::format("--- sample at step {} ---\n{}\n---", step + 1, s));
    }
    if (!rec.is_null() && metrics) metrics->write(rec);
    if (opt.on_step) opt.on_step(step + 1, loss, *dp);
  }
  progress.finish();
  auto end = Clock::now();
  sum.seconds = std::chrono::duration<double>(end - run_start).count();
  if (cfg.train.steps > 1) {
    const double timed = std::chrono::duration<double>(end - timed_start).count();
    sum.items_per_s = double(task->items_per_step() * (cfg.train.steps - 1)) / timed;
  }

  dp->gather_all();
  if (lead)
    nn::save_weights(model, (dir / "model.safetensors").string(),
                     {{"format", "pt"}, {"tessera_model", cfg.model.kind}});
  dp->release_all();
  if (tracer.enabled()) tracer.write((dir / fmt::format("trace_rank{}.json", rank)).string());
  sum.overlap = tracer.overlap(cfg.train.steps > 1 ? 1 : 0);

  std::string summary = fmt::format("tessera: done: {} steps in {}, final loss {:.4f}, {} {}",
                                    sum.steps, format_duration(sum.seconds), sum.final_loss,
                                    format_si(sum.items_per_s), task->rate_unit());
  for (auto& [k, v] : sum.last_eval.items())
    summary += fmt::format(", {} {:.4f}", k, v.get<double>());
  if (skipped) summary += fmt::format(", {} steps skipped (non-finite)", skipped);
  const AllocatorStats mem = allocator_for(Device::cpu()).stats();
  summary += fmt::format(", peak tensor memory {:.1f} MiB", double(mem.peak_in_use) / (1 << 20));
  progress.message(summary);
  if (world > 1)
    progress.message(fmt::format(
        "tessera: communication (rank 0, after step 1): {:.3f} s in flight, {:.1f}% hidden "
        "behind computation, {} of {} collectives started during backward; traces: "
        "{}/trace_rank*.json",
        sum.overlap.comm_s, 100 * sum.overlap.share(), sum.overlap.started_in_backward,
        sum.overlap.comm_spans, dir.string()));
  if (opt.plot && lead) progress.message("curves: " + plot_run(dir.string()));
  return sum;
}

}  // namespace tessera::train
