#include "train/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <variant>

#include "ckpt/checkpoint.h"
#include "ckpt/run_state.h"
#include "ckpt/signals.h"
#include "core/allocator.h"
#include "core/backend.h"
#include "core/file_io.h"
#include "dist/consistency.h"
#include "dist/world.h"
#include "nn/weights.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "train/device.h"
#include "train/metrics.h"
#include "train/plot.h"
#include "train/rank_timing.h"
#include "train/sample_account.h"
#include "train/task.h"

namespace tessera::train {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

DType compute_dtype(const Config& cfg) {
  const std::string& p = cfg.train.precision;
  if (p == "bf16") return DType::bf16;
  if (p == "fp16") return DType::f16;
  return DType::f32;
}

// fp16 needs a dynamic loss scale (its range ends at 65504 and its small values flush to zero);
// f32 and bf16 (f32's range) train without one: the scaler then stays at 1.
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

// What every rank must agree on: each config key's value and each parameter's name and shape.
dist::Entries job_identity(const Config& cfg, nn::Module& model) {
  dist::Entries e;
  for (const ConfigKey& key : config_keys()) {
    const ConfigValue v = key.get(cfg);
    e.emplace_back(std::string(key.name), config_value_text(v));
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

// A resumed run keeps the metrics of the steps up to its checkpoint and drops the later ones
// (they are trained again), and any line a kill cut short.
void keep_metrics_up_to(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  write_file_atomically(path.string(), kept);
}

// Rank 0 picks the checkpoint to resume from and every rank learns it: its folder, "" for a
// fresh start, or the error that stops the run (the same on every rank).
std::optional<ckpt::VerifiedCheckpoint> resolve_resume(const Config& cfg, const RunOptions& opt,
                                                       dist::Communicator& comm,
                                                       ProgressLine& progress) {
  if (opt.resume.empty()) return std::nullopt;
  std::string said;
  if (comm.rank() == 0) {
    try {
      if (opt.resume == "latest") {
        std::vector<std::string> rejected;
        auto c = ckpt::find_latest_checkpoint(opt.out_dir, &cfg, [&](const std::string& e) {
          rejected.push_back(e);
          progress.message("tessera: skipping a checkpoint that does not verify: " + e);
        });
        if (c)
          said = "ok:" + c->dir;
        else if (!rejected.empty())
          said = fmt::format("err:--resume latest: no checkpoint in '{}' verifies: {}",
                             ckpt::checkpoints_dir(opt.out_dir), fmt::join(rejected, "; "));
        else
          progress.message(
              fmt::format("tessera: --resume latest: '{}' has no checkpoint yet; "
                          "starting afresh",
                          ckpt::checkpoints_dir(opt.out_dir)));
      } else {
        said = "ok:" + ckpt::verify_checkpoint(opt.resume, &cfg).dir;
      }
    } catch (const std::exception& e) {
      said = std::string("err:") + e.what();
    }
  }
  said = comm.all_gather_bytes(said)[0];
  if (said.empty()) return std::nullopt;
  TS_CHECK(said.rfind("err:", 0) != 0, "{}", said.substr(4));
  // Rank 0 checked every byte; the others check sizes and parse the small files themselves.
  return ckpt::verify_checkpoint(said.substr(3), &cfg, /*checksums=*/comm.rank() == 0);
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
    // torchrun-style launches start GPU jobs through rank 0's store; CPU ranks need MPI.
    comm = dist::communicator_for_launch(dist::detect_launch(), mo, cfg.train.device == "cuda");
  }
  // On GPUs with several ranks the communicator becomes NCCL's, bootstrapped over the CPU one.
  const Placement place = place_training(cfg, std::move(comm));
  comm = place.comm;
  const Device device = place.device;
  const int rank = comm->rank(), world = comm->world_size();
  const bool lead = rank == 0;
  const int64_t micro = cfg.train.micro_batches;
  TS_CHECK(cfg.train.batch_size % (int64_t(world) * micro) == 0,
           "config: train.batch_size = {} does not split evenly over {} ranks x "
           "train.micro_batches = {}: every rank's micro-batches must have equal rows, so that "
           "averaging over ranks gives the single-process gradient",
           cfg.train.batch_size, world, micro);
  std::optional<ckpt::StopSignals> signals;
  if (opt.handle_signals) signals.emplace();

  const fs::path dir(opt.out_dir);
  fs::create_directories(dir);
  // Only rank 0 talks; the others print nothing but errors.
  std::unique_ptr<FILE, int (*)(FILE*)> devnull(lead ? nullptr : std::fopen("/dev/null", "w"),
                                                &std::fclose);
  FILE* console = lead ? opt.console : devnull.get();
  TS_CHECK(console, "cannot open /dev/null for rank {}'s console", rank);
  ProgressLine progress(cfg.train.steps, console);

  const std::optional<ckpt::VerifiedCheckpoint> resumed = resolve_resume(cfg, opt, *comm, progress);
  if (lead) {
    if (resumed)
      keep_metrics_up_to(dir / "metrics.jsonl", resumed->state.step);
    else
      fs::remove(dir / "metrics.jsonl");  // a fresh run owns its folder's metrics
    write_text(dir / "config.toml", to_toml(cfg));
    ckpt::CheckpointWriter::remove_stale_temporaries(dir.string());
  }

  // A resumed run takes its weights from the checkpoint: the init file is not even read.
  Config task_cfg = cfg;
  if (resumed) task_cfg.model.init_weights.clear();
  std::unique_ptr<Task> task = make_task(task_cfg, TaskPlacement{rank, world});
  if (!device.is_cpu()) task->to_device(device);  // before the engine flattens the parameters
  nn::Module& model = task->model();
  dist::check_same_on_all_ranks(*comm, job_identity(cfg, model), "config");
  // Every rank initialised from the same seed; rank 0's values make that exact regardless.
  if (world > 1 && !resumed)
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

  DynamicLossScaler scaler(loss_scaler_options(cfg));
  const bool fp16 = scaler.options().enabled;
  ckpt::LoopState loop;
  loop.loss_scaler = scaler.state();
  if (resumed) {
    ckpt::load_into(*resumed, *dp);
    loop = ckpt::restore_run_state(resumed->state, *task,
                                   (fs::path(resumed->dir) / ckpt::kTrainerStateName).string());
    progress.message(fmt::format("tessera: resuming from {} (step {} of {}, saved on {} ranks)",
                                 resumed->dir, loop.step, cfg.train.steps,
                                 resumed->state.world_size));
    scaler.load_state(loop.loss_scaler);
  }
  SampleAccount samples(comm.get(), rank);
  RankTiming timing(comm.get(), cfg.parallel.slow_rank_factor);
  if (resumed) samples.resume(loop.samples_digest);
  ckpt::CheckpointWriter writer(*comm, dir.string(), cfg.train.checkpoint_keep);
  const std::string config_toml = to_toml(cfg);

  std::optional<MetricsWriter> metrics;
  if (lead) metrics.emplace((dir / "metrics.jsonl").string());
  progress.message(fmt::format(
      "tessera: training {} ({} parameters) on {} for {} steps, {} precision, on {}, {} threads "
      "-> {}",
      cfg.model.kind, dp->param_numel(), cfg.data.path, cfg.train.steps, cfg.train.precision,
      describe_device(device), omp_get_max_threads(), dir.string()));
  if (world > 1)
    progress.message(fmt::format("tessera: {} ranks over {}, ZeRO stage {}, {} rows per rank",
                                 world, comm->describe(), cfg.parallel.zero_stage,
                                 cfg.train.batch_size / world));

  RunSummary sum;
  sum.world_size = world;
  sum.memory = dp->memory();
  sum.start_step = loop.step;
  sum.steps = loop.step;
  // Checkpoints: a save's files may still be written in the background; finish() is
  // collective, so every rank calls it at the same step.
  int64_t checkpointed_step = resumed ? loop.step : -1;  // the newest checkpoint that exists
  auto finish_save = [&] {
    ckpt::SaveResult r = writer.finish();
    if (r.ok) {
      checkpointed_step = r.step;
      sum.last_checkpoint = r.path;
      ++sum.checkpoints_saved;
      progress.message(fmt::format("checkpoint: step {} -> {}", r.step, r.path));
    } else {
      ++sum.checkpoint_failures;
      progress.message(fmt::format(
          "checkpoint: saving step {} failed: {} (earlier checkpoints are intact; training "
          "continues)",
          r.step, r.error));
    }
    return r;
  };
  auto save = [&](bool async) {
    if (writer.pending()) finish_save();
    loop.loss_scaler = scaler.state();
    loop.samples_digest = samples.global().run;
    const ckpt::TrainerState st = ckpt::capture_trainer_state(loop, *task, *dp);
    writer.start(ckpt::take_snapshot(*dp, model, st, config_toml, cfg.model.kind), async);
    return async ? ckpt::SaveResult{true, loop.step, "", ""} : finish_save();
  };
  // Whether every rank's background write is done (agreed, so all finish at the same step).
  auto save_ready = [&] {
    const bool mine = writer.files_done();
    return world == 1 ? mine : comm->sum_f64(mine ? 0 : 1) == 0;
  };

  auto run_start = Clock::now();
  Clock::time_point timed_start;
  const int64_t first_step = loop.step;
  for (int64_t step = first_step; step < cfg.train.steps; ++step) {
    if (step == first_step + 1) timed_start = Clock::now();  // the first step builds primitives
    tracer.set_step(step);
    auto t0 = Clock::now();
    const double lr = schedule.lr(step);
    dp->zero_grad();
    task->next_batch();
    samples.add(step, task->sample_ids());
    // The micro-batch losses are read once backward is queued: on a GPU, reading one waits for
    // the device, and the host should be enqueuing the backward meanwhile.
    std::vector<Tensor> micro_losses;
    const float loss_scale = scaler.scale();
    {
      AutocastGuard autocast(compute);
      for (int64_t i = 0; i < micro; ++i) {
        dp->begin_micro_batch(i + 1 == micro);
        Tensor l;
        {
          dist::ScopedSpan span(&tracer, "forward");
          l = task->micro_loss(i, micro);
        }
        micro_losses.push_back(l.detach());
        dist::ScopedSpan span(&tracer, "backward");
        const float f = loss_scale / float(micro);  // fp16: gradients loss_scale x too large
        (f == 1.f ? l : ops::scale(l, f)).backward();
      }
    }
    if (opt.before_gradient_sync) opt.before_gradient_sync(step);
    timing.add(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    dp->finish_backward();
    // On a device the losses' copies to the host start here and land with the gradient norm's
    // read below: the step waits for the device once, not once per read.
    std::vector<std::unique_ptr<HostRead>> loss_reads;
    for (Tensor& l : micro_losses) {
      if (l.device().is_cpu()) continue;
      l = l.to(DType::f32).contiguous();
      loss_reads.push_back(backend_for(l.device(), "loss").read_async(l.raw_data(), sizeof(float)));
    }
    // The true norm; the gradients are unscaled (fp16) and clipped in one pass when finite.
    const double gnorm = dp->clip_grad_norm(cfg.optim.grad_clip, loss_scale);
    double loss = 0;
    for (size_t i = 0; i < micro_losses.size(); ++i) {
      float v = 0.f;
      if (loss_reads.empty())
        v = micro_losses[i].item();
      else
        std::memcpy(&v, loss_reads[i]->wait(), sizeof v);
      loss += double(v) / double(micro);
    }
    if (world > 1) loss = comm->average_f64(loss);
    // The loss is averaged and the norm global: every rank takes the same branch.
    // fp16: a finite loss with an inf/NaN gradient is the loss scale overflowing fp16, not a
    // diverging run: the scaler halves the scale and the step is skipped without counting
    // against train.max_bad_steps (until the scale reaches its floor).
    const bool overflow = fp16 && std::isfinite(loss) && !std::isfinite(gnorm) &&
                          scaler.scale() > scaler.options().min_scale;
    if (std::isfinite(loss) && std::isfinite(gnorm)) {
      dp->step(float(lr));
      loop.bad_in_a_row = 0;
      scaler.update(true);
    } else if (overflow) {
      scaler.update(false);
      progress.message(fmt::format(
          "step {}: fp16 gradients overflowed at loss scale {}: step skipped, scale now {}",
          step + 1, double(loss_scale), double(scaler.scale())));
    } else {
      scaler.update(false);
      ++loop.bad_total, ++loop.bad_in_a_row;
      progress.message(
          fmt::format("step {}: non-finite loss {} or gradient norm {}: skipped ({} "
                      "in a row)",
                      step + 1, loss, gnorm, loop.bad_in_a_row));
      TS_CHECK(cfg.train.max_bad_steps == 0 || loop.bad_in_a_row < cfg.train.max_bad_steps,
               "train: {} steps in a row (steps {} to {}) had a non-finite loss or gradient "
               "norm; stopping (train.max_bad_steps = {}). Lower optim.lr or set "
               "optim.grad_clip; {}",
               loop.bad_in_a_row, step + 2 - loop.bad_in_a_row, step + 1, cfg.train.max_bad_steps,
               sum.last_checkpoint.empty() && !resumed
                   ? std::string("no checkpoint was saved")
                   : "the last checkpoint is " +
                         (sum.last_checkpoint.empty() ? resumed->dir : sum.last_checkpoint));
    }
    loop.step = step + 1;
    loop.last_lr = lr;
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const double rate = double(task->items_per_step()) / (ms / 1e3);
    // Model FLOPs (forward + backward) this rank's device ran per second, and their share of
    // the device's peak when the config gives it.
    const double tflops = task->flops_per_step() / double(world) / (ms / 1e3) / 1e12;
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
      if (tflops > 0) rec["tflops_per_device"] = tflops;
      if (tflops > 0 && cfg.train.peak_tflops > 0) rec["mfu"] = tflops / cfg.train.peak_tflops;
      const RankTiming::Report times = timing.report();
      rec["rank_compute_ms_p50"] = times.p50_ms;
      rec["rank_compute_ms_p95"] = times.p95_ms;
      for (int r : times.newly_slow)
        progress.message(fmt::format(
            "warning: rank {} is slow: its median compute time per step, {:.1f} ms, is {:.1f}x "
            "the other ranks' median ({:.1f} ms) on {} logged steps in a row "
            "(parallel.slow_rank_factor = {})",
            r, times.p50_ms[size_t(r)], times.p50_ms[size_t(r)] / times.others_median_ms[size_t(r)],
            times.others_median_ms[size_t(r)], RankTiming::kPatience,
            cfg.parallel.slow_rank_factor));
      const SampleAccount::Digests digests = samples.global();
      rec["samples_hash"] = digest_hex(digests.step);
      if (digests.run) rec["samples_hash_run"] = digest_hex(*digests.run);
      if (fp16) {
        rec["loss_scale"] = scaler.scale();
        rec["loss_scale_skipped"] = scaler.skipped_steps();  // whole run, resumes included
      }
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

    // Checkpoints: finish a background save once every rank has written its files; start the
    // periodic one (the last step's is written in the foreground: the run ends right after).
    if (writer.pending() && save_ready()) finish_save();
    const int64_t every = cfg.train.checkpoint_every;
    if (every > 0 && ((step + 1) % every == 0 || last)) {
      save(cfg.train.checkpoint_async != 0 && !last);
    }
    if (opt.on_step) opt.on_step(step + 1, loss, *dp);
    // A stop signal on any rank stops them all here, after the same step.
    if (signals && !last) {
      const int sig = ckpt::stop_requested();
      const double any = world == 1 ? double(sig) : comm->sum_f64(sig ? 1 : 0);
      if (any > 0) {
        sum.interrupted = true;
        sum.stop_signal = sig ? sig : SIGTERM;
        if (writer.pending()) finish_save();
        if (checkpointed_step != step + 1) {
          const ckpt::SaveResult r = save(false);
          TS_CHECK(r.ok,
                   "stopped by signal {} after step {}, but the checkpoint could not be saved: "
                   "{}",
                   sum.stop_signal, step + 1, r.error);
        }
        break;
      }
    }
  }
  if (writer.pending()) finish_save();
  progress.finish();
  auto end = Clock::now();
  sum.seconds = std::chrono::duration<double>(end - run_start).count();
  sum.bad_steps = loop.bad_total;
  sum.loss_scale = scaler.scale();
  sum.loss_scale_skipped = scaler.skipped_steps();
  sum.samples_digest = samples.global().run;
  sum.slow_ranks = timing.slow_ranks();
  const int64_t timed_steps = sum.steps - sum.start_step - 1;
  if (timed_steps > 0) {
    const double timed = std::chrono::duration<double>(end - timed_start).count();
    sum.items_per_s = double(task->items_per_step() * timed_steps) / timed;
    sum.tflops_per_device =
        task->flops_per_step() * double(timed_steps) / double(world) / timed / 1e12;
  }

  if (sum.interrupted) {
    progress.message(fmt::format(
        "tessera: stopped by signal {} after step {}; checkpoint {}. Continue with: tessera "
        "train CONFIG --out {} --resume latest",
        sum.stop_signal, sum.steps, sum.last_checkpoint, dir.string()));
    return sum;
  }
  dp->gather_all();
  if (lead)
    nn::save_weights(model, (dir / "model.safetensors").string(),
                     {{"format", "pt"}, {"tessera_model", cfg.model.kind}});
  dp->release_all();
  if (tracer.enabled()) tracer.write((dir / fmt::format("trace_rank{}.json", rank)).string());
  sum.overlap = tracer.overlap(sum.steps - sum.start_step > 1 ? 1 : 0);

  std::string summary = fmt::format("tessera: done: {} steps in {}, final loss {:.4f}, {} {}",
                                    sum.steps, format_duration(sum.seconds), sum.final_loss,
                                    format_si(sum.items_per_s), task->rate_unit());
  if (sum.tflops_per_device > 0) {
    summary += fmt::format(", {:.3g} TFLOP/s per device", sum.tflops_per_device);
    if (cfg.train.peak_tflops > 0)
      summary +=
          fmt::format(" (MFU {:.1f}% of train.peak_tflops = {})",
                      100 * sum.tflops_per_device / cfg.train.peak_tflops, cfg.train.peak_tflops);
  }
  for (auto& [k, v] : sum.last_eval.items())
    summary += fmt::format(", {} {:.4f}", k, v.get<double>());
  if (loop.bad_total) summary += fmt::format(", {} steps skipped (non-finite)", loop.bad_total);
  if (fp16)
    summary += fmt::format(", loss scale {} ({} steps skipped for fp16 overflow)",
                           double(scaler.scale()), scaler.skipped_steps() - loop.bad_total);
  const AllocatorStats mem = training_memory(device);
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
