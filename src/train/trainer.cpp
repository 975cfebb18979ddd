#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <limits>
#include <utility>

#include <fmt/format.h>

#include "ckpt/whole_layout.h"
#include "core/allocator.h"
#include "core/backend.h"
#include "core/file_io.h"
#include "core/file_system.h"
#include "core/host_cores.h"
#include "core/meta_device.h"
#include "core/profiler.h"
#include "dist/consistency.h"
#include "dist/pipeline_runner.h"
#include "dist/world.h"
#include "nn/weights.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "train/device.h"
#include "train/mfu_peak.h"
#include "train/plot.h"
#include "train/trainer_setup.h"

namespace tessera::train {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Whether a step counted from 1 falls on a period of `every` (0: never).
bool on_period(int64_t done, int64_t every) {
  return every > 0 && done % every == 0;
}

// On a device the losses' copies to the host start here and land with the gradient norm's read
// that follows: the step waits for the device once, not once per read. Empty on the CPU.
std::vector<std::unique_ptr<HostRead>> start_loss_reads(std::vector<Tensor>& micro_losses) {
  std::vector<std::unique_ptr<HostRead>> reads;
  for (Tensor& l : micro_losses) {
    if (l.device().is_cpu()) continue;
    l = l.to(DType::f32).contiguous();
    reads.push_back(backend_for(l.device(), "loss").read_async(l.raw_data(), sizeof(float)));
  }
  return reads;
}

// The mean of the micro-batch losses, summed in micro-batch order.
double mean_micro_loss(const std::vector<Tensor>& micro_losses,
                       const std::vector<std::unique_ptr<HostRead>>& reads, int64_t micro) {
  double loss = 0;
  for (size_t i = 0; i < micro_losses.size(); ++i) {
    float v = 0.f;
    if (reads.empty())
      v = micro_losses[i].item();
    else
      std::memcpy(&v, reads[i]->wait(), sizeof v);
    loss += double(v) / double(micro);
  }
  return loss;
}

}  // namespace

RunSummary run_training(const Config& cfg, const RunOptions& opt) {
  return Trainer(cfg, opt).run();
}

RunSummary Trainer::run() {
  set_up();
  run_start_ = Clock::now();
  const int64_t first_step = loop_.step;
  for (int64_t s = first_step; s < cfg_.train.steps; ++s) {
    if (s == first_step + 1) {  // the first step builds primitives: timed from the second
      timed_start_ = Clock::now();
      if (opt_.profile) prof::reset(), prof::set_enabled(true);
    }
    StepResult r = train_step(s);
    if (decider_ && verdicts_due(r.step)) read_verdicts(&r);
    report(r);
    checkpoint_if_due(r.step);
    if (opt_.on_step) opt_.on_step(r.step, r.loss, *dp_);
    if (handle_stop_signal(r.step)) break;
  }
  return finish();
}

// ---- Set-up ----

void Trainer::set_up() {
  validate(cfg_, "config");
  if (cfg_.train.threads > 0) omp_set_num_threads(int(cfg_.train.threads));
  compute_ = compute_dtype(cfg_);
  connect_ranks();
  check_memory_fits();
  mfu_peak_ = mfu_peak(cfg_, device_, compute_);
  open_run_folder();
  build_model_and_engine();
  build_optimisation_state();
  open_records();
}

void Trainer::connect_ranks() {
  std::shared_ptr<dist::Communicator> comm = opt_.comm;
  if (!comm) {
    dist::MpiOptions mo;
    mo.timeout_s = cfg_.parallel.timeout_s;
    mo.stuck_timeout_s = cfg_.parallel.stuck_timeout_s;
    mo.overlap = dist::MpiOptions::overlap_named(cfg_.parallel.overlap);
    // torchrun-style launches start GPU jobs through rank 0's store; CPU ranks need MPI.
    comm = dist::communicator_for_launch(dist::detect_launch(), mo, cfg_.train.device == "cuda");
  }
  // On GPUs with several ranks the communicator becomes NCCL's, bootstrapped over the CPU one.
  const Placement place = place_training(cfg_, std::move(comm));
  comm_ = place.comm;
  device_ = place.device;
  rank_ = comm_->rank(), world_ = comm_->world_size();
  lead_ = rank_ == 0;
  micro_ = cfg_.train.micro_batches;
  mesh_.emplace(comm_, int(cfg_.parallel.tp), int(cfg_.parallel.pp), int(cfg_.parallel.cp));
  if (cfg_.parallel.tp > 1) tp_group_ = std::make_unique<dist::CommunicatorGroup>(mesh_->tp());
  if (cfg_.parallel.cp > 1) cp_group_ = std::make_unique<dist::CommunicatorGroup>(mesh_->cp());
  if (cfg_.parallel.pp > 1)
    pipeline_ = dist::pipeline::make_schedule(pipeline_kind(cfg_.parallel.pp_schedule),
                                              int(cfg_.parallel.pp), int(micro_),
                                              int(cfg_.parallel.pp_virtual_stages));
  const int dp = mesh_->shape().dp;
  TS_CHECK(cfg_.train.batch_size % (int64_t(dp) * micro_) == 0,
           "config: train.batch_size = {} does not split evenly over {} data-parallel ranks x "
           "train.micro_batches = {}: every rank's micro-batches must have equal rows, so that "
           "averaging over ranks gives the single-process gradient",
           cfg_.train.batch_size, dp, micro_);
  if (opt_.handle_signals) signals_.emplace();
}

void Trainer::check_memory_fits() {
  if (!opt_.fit_check) return;
  double capacity = 0;
  std::string text;
  if (device_.is_cpu()) {
    // The ranks on this machine share its memory: count those whose host name is this one's.
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    const std::vector<std::string> hosts =
        world_ > 1 ? comm_->all_gather_bytes(name) : std::vector<std::string>{name};
    const int here = int(std::count(hosts.begin(), hosts.end(), std::string(name)));
    capacity = host_memory_bytes() / double(here);
    text = here == 1 ? fmt::format("{:.2f} GiB of host memory", capacity / double(1 << 30))
                     : fmt::format(
                           "{:.2f} GiB of host memory per rank ({} ranks share this "
                           "machine's {:.2f} GiB)",
                           capacity / double(1 << 30), here, host_memory_bytes() / double(1 << 30));
  } else {
    capacity = double(backend_for(device_, "fit check").memory_bytes(device_.index));
    text = fmt::format("{:.2f} GiB of device memory", capacity / double(1 << 30));
  }
  // Unknown memory (0): nothing to check against. Each rank's verdict reaches all, so they
  // refuse together even where machines differ.
  const std::string mine = capacity > 0 ? opt_.fit_check(cfg_, world_, capacity, text) : "";
  const std::vector<std::string> verdicts =
      world_ > 1 ? comm_->all_gather_bytes(mine) : std::vector<std::string>{mine};
  for (size_t r = 0; r < verdicts.size(); ++r)
    TS_CHECK(verdicts[r].empty(), "{}{}", world_ > 1 ? fmt::format("rank {}: ", r) : "",
             verdicts[r]);
}

void Trainer::open_run_folder() {
  dir_ = fs::path(opt_.out_dir);
  create_directories_durably(dir_.string());
  // Only rank 0 talks; the others print nothing but errors.
  if (!lead_) devnull_.reset(std::fopen("/dev/null", "w"));
  FILE* console = lead_ ? opt_.console : devnull_.get();
  TS_CHECK(console, "cannot open /dev/null for rank {}'s console", rank_);
  progress_.emplace(cfg_.train.steps, console);

  resumed_ = resolve_resume(cfg_, opt_.resume, opt_.out_dir, *comm_, *progress_);
  if (lead_) {
    if (resumed_)
      keep_metrics_up_to(dir_ / "metrics.jsonl", resumed_->state.step);
    else
      file_system().remove((dir_ / "metrics.jsonl").string());  // a fresh run owns its metrics
    write_text(dir_ / "config.toml", to_toml(cfg_));
    ckpt::CheckpointWriter::remove_stale_temporaries(dir_.string());
  }
}

void Trainer::build_model_and_engine() {
  // A resumed run takes its weights from the checkpoint: the init file is not even read.
  Config task_cfg = cfg_;
  if (resumed_) task_cfg.model.init_weights.clear();
  dist::Communicator& dp_comm = *mesh_->dp();
  TaskPlacement place{dp_comm.rank(), dp_comm.world_size(), tp_group_.get(),
                      cfg_.parallel.sequence_parallel != 0};
  if (pipeline_) {
    place.pipeline = mesh_->pp().get();
    place.virtual_stages = pipeline_->v;
  }
  place.context_parallel = cp_group_.get();
  task_ = make_task(task_cfg, place);
  task_->set_device(device_);
  // The engine flattens the parameters where they are, so the model goes to the device first;
  // but under ZeRO-3 on a GPU the engine copies only this rank's shard from the host, so that a
  // model larger than one GPU can start (and a plan for GPUs, on the meta device, does the same).
  const bool shard_from_host =
      cfg_.parallel.zero_stage == 3 &&
      (device_.type == DeviceType::cuda || (device_.is_meta() && meta::plays_cuda()));
  nn::Module& model = task_->model();
  if (!device_.is_cpu() && !shard_from_host) model.to(device_);
  const std::vector<nn::TensorShard> shards = task_->parameter_shards();
  if (pipeline_) {
    // Every rank has the config; the parameters are compared among the ranks of one stage.
    dist::check_same_on_all_ranks(*comm_, job_identity(cfg_), "config");
    const std::unique_ptr<dist::Communicator> stage_peers =
        comm_->split_by([&](int r) { return std::pair(mesh_->pp_rank_of(r), r); });
    dist::check_same_on_all_ranks(*stage_peers, parameter_identity(model, shards), "config");
  } else {
    dist::check_same_on_all_ranks(*comm_, job_identity(cfg_, model, shards), "config");
  }
  // Every rank initialised from the same seed; the first data-parallel replica's values make
  // that exact regardless (each tensor-parallel rank's own part).
  // The ranks holding the same part of the model (data and context parallel) average its
  // gradients and start from the first one's values. (ZeRO-3 from the host: each rank keeps its
  // own shard of its own initialisation, the same on every rank by the counter-based generator;
  // a GPU communicator cannot broadcast host tensors.)
  dist::Communicator& data_comm = *mesh_->data();
  if (data_comm.world_size() > 1 && !resumed_ && !shard_from_host)
    for (const Tensor& p : model.parameters()) data_comm.broadcast(p, 0);
  tracer_.emplace(rank_, world_ > 1 || opt_.trace);
  tracer_->name_track(0, "training thread");
  const dist::ParameterUnits units =
      cfg_.parallel.zero_stage == 3 ? task_->parameter_units() : dist::ParameterUnits{};
  dist::DataParallelOptions po = parallel_options(cfg_);
  if (shard_from_host) po.device = device_;
  if (tp_group_ || pipeline_) {
    // The gradient norm sums the replica's parts, each parameter once: a whole copy on every
    // tensor-parallel rank counts on the first, a tied embedding on the first stage.
    po.model_parallel = mesh_->model().get();
    const std::vector<Tensor> params = model.parameters();
    const Tensor* copy = task_->tied_stage_copy();
    for (size_t i = 0; i < params.size(); ++i) {
      const bool tp_copy = !shards.empty() && shards[i].replicated() && mesh_->tp_rank() != 0;
      const bool stage_copy = copy && copy->impl_ptr() == params[i].impl_ptr();
      po.counted.push_back(!tp_copy && !stage_copy);
    }
  }
  dp_ = dist::make_data_parallel(model, data_comm, po, &*tracer_, units);
  // The first and last stages' ranks (same other coordinates) sum a tied embedding's gradients.
  if (pipeline_ && cfg_.model.head == "tied") {
    const int p = mesh_->shape().pp;
    embedding_group_ =
        mesh_->pp()->split_by([p](int s) { return std::pair(s == 0 || s == p - 1 ? 0 : 1, s); });
  }
  task_->set_parameter_gather(dp_->gather());
}

void Trainer::build_optimisation_state() {
  schedule_.emplace(schedule_options(cfg_));
  scaler_.emplace(loss_scaler_options(cfg_));
  fp16_ = scaler_->options().enabled;
  loop_.loss_scaler = scaler_->state();
  if (resumed_) {
    if (tp_group_ || pipeline_)
      ckpt::load_whole_into(*resumed_, *dp_, whole_layout());
    else
      ckpt::load_into(*resumed_, *dp_);
    loop_ = ckpt::restore_run_state(resumed_->state, *task_,
                                    (fs::path(resumed_->dir) / ckpt::kTrainerStateName).string());
    progress_->message(fmt::format("tessera: resuming from {} (step {} of {}, saved on {} ranks)",
                                   resumed_->dir, loop_.step, cfg_.train.steps,
                                   resumed_->state.world_size));
    scaler_->load_state(loop_.loss_scaler);
  }
  // Counted over the data-parallel ranks: a tensor-parallel group shares its rows.
  samples_.emplace(mesh_->dp().get(), mesh_->dp_rank());
  timing_.emplace(comm_.get(), cfg_.parallel.slow_rank_factor);
  if (resumed_) samples_->resume(loop_.samples_digest);
  if (device_.type == DeviceType::cuda) {
    StepDeciderOptions o;
    o.counts_norm = dp_->norm_counted_here();
    // A pipeline's losses are on the rank of its last stage (stage s lives on rank s % p).
    if (pipeline_) o.counts_loss = mesh_->pp_rank() == (pipeline_->stages() - 1) % pipeline_->p;
    o.scaler = scaler_->options();
    o.max_norm = cfg_.optim.grad_clip;
    o.micro_batches = micro_;
    o.capacity = std::clamp<int64_t>(cfg_.train.log_every, 1, 4096);
    decider_.emplace(device_, *comm_, o, scaler_->state(), dp_->optimizer_steps());
    host_waits_logged_ = backend_for(device_).host_waits();
  }
}

void Trainer::open_records() {
  checkpoints_.emplace(*comm_, dir_.string(), cfg_.train.checkpoint_keep, *progress_,
                       resumed_ ? resumed_->dir : "", loop_.step);
  config_toml_ = to_toml(cfg_);
  if (lead_)
    metrics_.emplace((dir_ / "metrics.jsonl").string(),
                     [this](const std::string& text) { progress_->message(text); });
  // A model split over tensor or pipeline ranks: the whole count, and this rank's share.
  const int64_t whole = task_->whole_parameter_count();
  const std::string params =
      whole > 0 && whole != dp_->param_numel()
          ? fmt::format("{} parameters, {} on this rank", whole, dp_->param_numel())
          : fmt::format("{} parameters", dp_->param_numel());
  progress_->message(fmt::format(
      "tessera: training {} ({}) on {} for {} steps, {} precision, on {}, {} threads -> {}",
      cfg_.model.kind, params, cfg_.data.path, cfg_.train.steps, cfg_.train.precision,
      describe_device(device_), omp_get_max_threads(), dir_.string()));
  if (pipeline_)
    progress_->message(fmt::format(
        "tessera: pipeline of {} stages on {} ranks, {} schedule over {} micro-batches (ideal "
        "bubble {:.1f}%)",
        pipeline_->stages(), pipeline_->p, cfg_.parallel.pp_schedule, pipeline_->m,
        100 * dist::pipeline::simulate(*pipeline_).bubble_fraction));
  if (world_ > 1)
    progress_->message(
        fmt::format("tessera: {} over {}, ZeRO stage {} over dp, {} rows per data-parallel rank",
                    mesh_->describe(), comm_->describe(), cfg_.parallel.zero_stage,
                    cfg_.train.batch_size / mesh_->shape().dp));
  summary_.world_size = world_;
  summary_.memory = dp_->memory();
  summary_.start_step = loop_.step;
  summary_.steps = loop_.step;
}

// ---- One step ----

StepResult Trainer::train_step(int64_t step) {
  tracer_->set_step(step);
  const auto t0 = Clock::now();
  StepResult r;
  r.step = step + 1;
  r.lr = schedule_->lr(step);
  {
    prof::Scope scope(prof::Family::optimizer, "zero_grad");
    dp_->zero_grad();
  }
  {
    prof::Scope scope(prof::Family::data, "batch");
    task_->next_batch();
  }
  samples_->add(step, task_->sample_ids());
  // Read once: the scaler changes only when the update is applied or skipped below. (On the
  // device's decisions, fp16's scale lives on the device: the backward seeds from it there.)
  const float loss_scale = scaler_->scale();
  if (decider_) {
    if (decider_->pending() == 0) window_start_ = t0;
    decider_->begin_step();
  }
  // The micro-batch losses are read once backward is queued: on a GPU, reading one waits for
  // the device, and the host should be enqueuing the backward meanwhile.
  const int64_t tp_bytes_before = tp_group_ ? tp_group_->payload_bytes() : 0;
  std::vector<Tensor> micro_losses =
      pipeline_ ? run_pipeline(loss_scale, r) : run_micro_batches(loss_scale);
  if (tp_group_) r.tp_bytes = tp_group_->payload_bytes() - tp_bytes_before;
  if (opt_.before_gradient_sync) opt_.before_gradient_sync(step);
  timing_->add(ms_since(t0));
  dp_->finish_backward();
  if (embedding_group_) sum_tied_embedding_grads();
  if (decider_) {  // no wait: the loss and norm stay NaN until the verdicts are read
    for (const Tensor& l : micro_losses) decider_->add_loss(l.to(DType::f32).contiguous());
    decider_->decide(*dp_);
    {
      prof::Scope scope(prof::Family::optimizer, "optimizer_step");
      dp_->step(float(r.lr), decider_->gate());
    }
    r.loss = r.grad_norm = std::numeric_limits<double>::quiet_NaN();
    loop_.step = r.step;
    loop_.last_lr = r.lr;
    summary_.steps = r.step;
    return r;
  }
  const std::vector<std::unique_ptr<HostRead>> loss_reads = start_loss_reads(micro_losses);
  // The true norm; the gradients are unscaled (fp16) and clipped in one pass when finite.
  {
    prof::Scope scope(prof::Family::optimizer, "clip_grad_norm");
    r.grad_norm = dp_->clip_grad_norm(cfg_.optim.grad_clip, loss_scale);
  }
  r.loss = mean_micro_loss(micro_losses, loss_reads, micro_);
  // Only the last pipeline stage has the losses: its value, then the mean over replicas.
  if (pipeline_) r.loss = mesh_->pp()->all_gather_f64(r.loss).back();
  if (world_ > 1) r.loss = comm_->average_f64(r.loss);
  apply_or_skip_update(r, loss_scale);
  loop_.step = r.step;
  loop_.last_lr = r.lr;

  r.ms = ms_since(t0);
  r.items_per_s = double(task_->items_per_step()) / (r.ms / 1e3);
  // Model FLOPs (forward + backward) this rank's device ran per second.
  r.tflops = task_->flops_per_step() / double(world_) / (r.ms / 1e3) / 1e12;
  summary_.final_loss = r.loss;
  summary_.tp_bytes_per_step = r.tp_bytes, summary_.pp_bytes_per_step = r.pp_bytes;
  summary_.losses.push_back(r.loss);
  summary_.steps = r.step;
  return r;
}

std::vector<Tensor> Trainer::run_micro_batches(float loss_scale) {
  std::vector<Tensor> micro_losses;
  AutocastGuard autocast(compute_);
  for (int64_t i = 0; i < micro_; ++i) {
    dp_->begin_micro_batch(i + 1 == micro_);
    Tensor l;
    {
      dist::ScopedSpan span(&*tracer_, "forward");
      l = task_->micro_loss(i, micro_);
    }
    micro_losses.push_back(l.detach());
    dist::ScopedSpan span(&*tracer_, "backward");
    const float f = loss_scale / float(micro_);  // fp16: gradients loss_scale x too large
    if (decider_ && fp16_)
      l.backward(decider_->backward_seed(l));  // the scale as the device last decided it
    else
      (f == 1.f ? l : ops::scale(l, f)).backward();
  }
  return micro_losses;
}

std::vector<Tensor> Trainer::run_pipeline(float loss_scale, StepResult& r) {
  AutocastGuard autocast(compute_);
  dist::pipeline::StageWork work;
  work.forward = [this](int stage, int micro, const Tensor& x) {
    dist::ScopedSpan span(&*tracer_, "forward");
    return task_->stage_forward(stage, micro, micro_, x);
  };
  work.output_shape = [this](int) { return task_->stage_output_shape(micro_); };
  work.before_backward = [this](int, bool last) { dp_->begin_micro_batch(last); };
  work.loss_scale = loss_scale;
  if (decider_ && fp16_)  // the scale as the device last decided it
    work.backward_seed = [this](const Tensor& l) { return decider_->backward_seed(l); };
  const dist::pipeline::StepStats stats =
      dist::pipeline::run_schedule(*pipeline_, *mesh_->pp(), device_, work);
  r.pipeline_transfer = stats.transfer_s / std::max(stats.transfer_s + stats.compute_s, 1e-12);
  r.pp_bytes = stats.sent_bytes;
  return stats.losses;
}

ckpt::WholeModelLayout Trainer::whole_layout() const {
  ckpt::WholeModelLayout l;
  if (tp_group_) l.tp = mesh_->tp().get(), l.shards = task_->parameter_shards();
  if (pipeline_) l.pp = mesh_->pp().get(), l.order = task_->whole_parameter_order();
  l.device = device_;
  return l;
}

void Trainer::sum_tied_embedding_grads() {
  const Tensor* w = task_->tied_embedding();
  if (!w) return;  // a middle stage: not in the group's collective
  Tensor g = w->grad();
  TS_CHECK(g.defined() && g.is_contiguous(),
           "pipeline: the tied embedding has no contiguous gradient to sum ({})",
           g.defined() ? g.desc() : std::string("none"));
  embedding_group_->all_reduce(g);
}

void Trainer::apply_or_skip_update(const StepResult& r, float loss_scale) {
  // The loss is averaged and the norm global: every rank takes the same branch.
  // fp16: a finite loss with an inf/NaN gradient is the loss scale overflowing fp16, not a
  // diverging run: the scaler halves the scale and the step is skipped without counting
  // against train.max_bad_steps (until the scale reaches its floor).
  // (The device's decide_step applies the same rules: kernels/cuda/optim.cu.)
  const bool finite_loss = std::isfinite(r.loss), finite_norm = std::isfinite(r.grad_norm);
  const bool overflow =
      fp16_ && finite_loss && !finite_norm && scaler_->scale() > scaler_->options().min_scale;
  int32_t outcome = kStepBad;
  if (finite_loss && finite_norm) {
    prof::Scope scope(prof::Family::optimizer, "optimizer_step");
    dp_->step(float(r.lr));
    outcome = kStepApplied;
  } else if (overflow) {
    outcome = kStepOverflow;
  }
  scaler_->update(outcome == kStepApplied);
  note_outcome(r.step, outcome, r.loss, r.grad_norm, loss_scale, scaler_->scale());
}

void Trainer::note_outcome(int64_t step, int32_t outcome, double loss, double grad_norm,
                           float scale_used, float scale_after) {
  if (outcome == kStepApplied) {
    loop_.bad_in_a_row = 0;
    return;
  }
  if (outcome == kStepOverflow) {
    progress_->message(fmt::format(
        "step {}: fp16 gradients overflowed at loss scale {}: step skipped, scale now {}", step,
        double(scale_used), double(scale_after)));
    return;
  }
  ++loop_.bad_total, ++loop_.bad_in_a_row;
  progress_->message(
      fmt::format("step {}: non-finite loss {} or gradient norm {}: skipped ({} in a row)", step,
                  loss, grad_norm, loop_.bad_in_a_row));
  TS_CHECK(cfg_.train.max_bad_steps == 0 || loop_.bad_in_a_row < cfg_.train.max_bad_steps,
           "train: {} steps in a row (steps {} to {}) had a non-finite loss or gradient "
           "norm; stopping (train.max_bad_steps = {}). Lower optim.lr or set "
           "optim.grad_clip; {}",
           loop_.bad_in_a_row, step + 1 - loop_.bad_in_a_row, step, cfg_.train.max_bad_steps,
           checkpoints_->describe_newest());
}

bool Trainer::verdicts_due(int64_t done) const {
  const TrainConfig& t = cfg_.train;
  return is_last(done) || decider_->full() || on_period(done, t.log_every) ||
         on_period(done, t.eval_every) || on_period(done, t.sample_every) ||
         on_period(done, t.checkpoint_every);
}

void Trainer::read_verdicts(StepResult* r) {
  const int64_t n = decider_->pending();
  if (n == 0) return;
  const double window_ms = ms_since(window_start_);
  const StepDecider::Verdicts v = decider_->read();
  const int64_t first = loop_.step - n + 1;
  for (int64_t k = 0; k < n; ++k) {
    const StepRecord& rec = v.steps[size_t(k)];
    summary_.final_loss = rec.loss;
    summary_.losses.push_back(rec.loss);
    note_outcome(first + k, rec.outcome, rec.loss, rec.grad_norm, rec.scale_used, rec.scale_after);
  }
  scaler_->load_state({v.state.loss_scale, v.state.clean_steps, v.state.skipped_steps});
  dp_->set_optimizer_steps(v.state.applied);
  if (!r) return;
  r->loss = v.steps.back().loss, r->grad_norm = v.steps.back().grad_norm;
  // The host queued ahead of the device: a step's own time is its share of the window's.
  r->ms = window_ms / double(n);
  r->items_per_s = double(task_->items_per_step()) / (r->ms / 1e3);
  r->tflops = task_->flops_per_step() / double(world_) / (r->ms / 1e3) / 1e12;
}

// ---- Reports: progress, metrics, evaluation, samples ----

void Trainer::report(const StepResult& r) {
  const bool last = is_last(r.step);
  const bool log = last || on_period(r.step, cfg_.train.log_every);
  const bool eval = opt_.evaluate && (last || on_period(r.step, cfg_.train.eval_every));
  nlohmann::json record;  // null: not a logged step
  if (log || eval) record = log_step(r);
  if (eval) {
    const nlohmann::json metrics = evaluate(r.step);
    for (auto& [k, v] : metrics.items()) record[k] = v;
  }
  if (cfg_.train.sample_every > 0 && (on_period(r.step, cfg_.train.sample_every) || last))
    sample(r.step);
  if (!record.is_null() && metrics_) metrics_->write(record);
}

nlohmann::json Trainer::log_step(const StepResult& r) {
  const RankTiming::Report times = timing_->report();
  for (int slow : times.newly_slow)
    progress_->message(slow_rank_warning(slow, times, cfg_.parallel.slow_rank_factor));
  const SampleAccount::Digests digests = samples_->global();
  StepRecordParts parts;
  parts.rate_key = task_->rate_key();
  parts.mfu_peak = mfu_peak_;
  parts.times = &times;
  parts.samples = &digests;
  parts.fp16_scaler = fp16_ ? &*scaler_ : nullptr;
  parts.peak_tensor_bytes = int64_t(training_memory(device_).peak_in_use);
  parts.host_waits = host_waits_since_logged();
  nlohmann::json record = step_record(r, parts);
  progress_->update(r.step, r.loss, r.lr, r.items_per_s, task_->rate_unit(), r.ms);
  return record;
}

// Collective (every rank logs): the most any rank has waited for its device since the previous
// record, where the device counts its host waits (the emulated one); -1 elsewhere.
int64_t Trainer::host_waits_since_logged() {
  if (host_waits_logged_ < 0) return -1;
  const int64_t now = backend_for(device_).host_waits();
  const std::vector<double> all = comm_->all_gather_f64(double(now - host_waits_logged_));
  host_waits_logged_ = now;
  return int64_t(*std::max_element(all.begin(), all.end()));
}

// Every rank takes part (ZeRO-3 needs them all to gather the parameters); the data-parallel
// ranks share the batches (eval_share.h), the results are identical, rank 0 reports them.
// Under ZeRO-3 with a layered forward the forward gathers stage by stage, as in training, so
// the model is never whole on the device; the data-parallel ranks then run their batches in
// lockstep (every rank as many forwards, so that the gathers pair up).
nlohmann::json Trainer::evaluate(int64_t step) {
  const bool by_stage = dp_->gather() != nullptr;
  if (!by_stage) dp_->gather_all();
  nlohmann::json e = task_->evaluate(EvalShare{mesh_->dp().get(), by_stage});
  dp_->release_all();  // by stage: what the last stage's forward left gathered
  if (!e.empty()) progress_->message(fmt::format("step {}:{}", step, eval_text(e)));
  summary_.last_eval = e;
  return e;
}

void Trainer::sample(int64_t step) {
  dp_->gather_all();
  const std::string s = task_->sample(cfg_.train.sample_tokens);
  dp_->release_all();
  if (!s.empty()) progress_->message(fmt::format("--- sample at step {} ---\n{}\n---", step, s));
}

// ---- Checkpoints and stop signals ----

void Trainer::checkpoint_if_due(int64_t done) {
  // Finish a background save once every rank has written its files; start the periodic one
  // (the last step's is written in the foreground: the run ends right after).
  if (checkpoints_->pending() && checkpoints_->ready_to_finish()) checkpoints_->finish_pending();
  const bool last = is_last(done);
  if (cfg_.train.checkpoint_every > 0 && (on_period(done, cfg_.train.checkpoint_every) || last))
    save_checkpoint(cfg_.train.checkpoint_async != 0 && !last);
}

ckpt::SaveResult Trainer::save_checkpoint(bool async) {
  checkpoints_->finish_pending();        // before the snapshot: one save at a time
  if (decider_) read_verdicts(nullptr);  // the scaler and update count as the device has them
  // The metrics up to this step become durable before the checkpoint of this step can.
  if (metrics_) metrics_->sync();
  loop_.loss_scaler = scaler_->state();
  loop_.samples_digest = samples_->global().run;
  ckpt::TrainerState st = ckpt::capture_trainer_state(loop_, *task_, *dp_);
  st.world_size = world_;
  // A split model is saved as if whole (ckpt/whole_layout.h): any layout can resume it.
  if (tp_group_ || pipeline_)
    return checkpoints_->start(ckpt::take_whole_snapshot(*dp_, task_->model(), whole_layout(),
                                                         lead_, st, config_toml_, cfg_.model.kind),
                               async);

  return checkpoints_->start(
      ckpt::take_snapshot(*dp_, task_->model(), st, config_toml_, cfg_.model.kind), async);
}

bool Trainer::handle_stop_signal(int64_t done) {
  if (!signals_ || is_last(done)) return false;
  // A stop signal on any rank stops them all here, after the same step.
  const int sig = ckpt::stop_requested();
  const double any = world_ == 1 ? double(sig) : comm_->sum_f64(sig ? 1 : 0);
  if (any <= 0) return false;
  summary_.interrupted = true;
  summary_.stop_signal = sig ? sig : SIGTERM;
  checkpoints_->finish_pending();
  if (!checkpoints_->has_step(done)) {
    const ckpt::SaveResult r = save_checkpoint(false);
    TS_CHECK(r.ok, "stopped by signal {} after step {}, but the checkpoint could not be saved: {}",
             summary_.stop_signal, done, r.error);
  }
  return true;
}

// ---- The end ----

RunSummary Trainer::finish() {
  checkpoints_->finish_pending();
  if (decider_) read_verdicts(nullptr);
  if (metrics_) {
    metrics_->sync();
    if (metrics_->pending_lines() > 0)
      progress_->message(fmt::format("metrics: {} logged lines could not be written to '{}'",
                                     metrics_->pending_lines(), metrics_->path()));
  }
  progress_->finish();
  complete_summary();
  if (opt_.profile) write_profile();
  if (summary_.interrupted) {
    progress_->message(fmt::format(
        "tessera: stopped by signal {} after step {}; checkpoint {}. Continue with: tessera "
        "train CONFIG --out {} --resume latest",
        summary_.stop_signal, summary_.steps, summary_.last_checkpoint, dir_.string()));
    return std::move(summary_);
  }
  save_final_weights();
  if (tracer_->enabled()) tracer_->write((dir_ / fmt::format("trace_rank{}.json", rank_)).string());
  summary_.overlap = tracer_->overlap(summary_.steps - summary_.start_step > 1 ? 1 : 0);
  print_closing_lines();
  return std::move(summary_);
}

void Trainer::write_profile() {
  prof::set_enabled(false);
  const int64_t steps = summary_.steps - summary_.start_step - 1;
  const fs::path path = dir_ / fmt::format("profile_rank{}.txt", rank_);
  std::string text = fmt::format("tessera train --profile: rank {} of {}, ", rank_, world_);
  if (steps <= 0) {
    text += "no step after the first (which builds primitives and is not profiled)\n";
  } else {
    // The profiled steps' wall time, evaluation, samples and checkpoint waits included (their
    // kernels are in the totals too).
    const double step =
        std::chrono::duration<double>(Clock::now() - timed_start_).count() / double(steps);
    text += fmt::format("steps {}-{} ({} profiled), {:.1f} ms per step\n\n",
                        summary_.start_step + 2, summary_.steps, steps, step * 1e3);
    text += prof::format_breakdown(prof::totals(), step, steps);
  }
  try {
    write_file_atomically(path.string(), text);
  } catch (const Error& e) {
    progress_->message(fmt::format("profile: cannot write '{}': {}", path.string(), e.what()));
    return;
  }
  if (lead_)
    progress_->message(fmt::format("profile: {}{}", path.string(),
                                   world_ > 1 ? " (and one per rank beside it)" : ""));
}

void Trainer::complete_summary() {
  const auto end = Clock::now();
  RunSummary& sum = summary_;
  sum.seconds = std::chrono::duration<double>(end - run_start_).count();
  sum.bad_steps = loop_.bad_total;
  sum.loss_scale = scaler_->scale();
  sum.loss_scale_skipped = scaler_->skipped_steps();
  sum.samples_digest = samples_->global().run;
  sum.slow_ranks = timing_->slow_ranks();
  sum.last_checkpoint = checkpoints_->last_saved();
  sum.checkpoints_saved = checkpoints_->saved();
  sum.checkpoint_failures = checkpoints_->failures();
  // Rates leave out the first step, which builds primitives.
  const int64_t timed_steps = sum.steps - sum.start_step - 1;
  if (timed_steps > 0) {
    const double timed = std::chrono::duration<double>(end - timed_start_).count();
    sum.items_per_s = double(task_->items_per_step() * timed_steps) / timed;
    sum.tflops_per_device =
        task_->flops_per_step() * double(timed_steps) / double(world_) / timed / 1e12;
  }
}

void Trainer::save_final_weights() {
  // The meta device's weights have no values; a plan's model may not even fit the disk.
  if (device_.is_meta()) return;
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"tessera_model", cfg_.model.kind}};
  const std::string path = (dir_ / "model.safetensors").string();
  if (tp_group_ || pipeline_) {  // the whole tensors, gathered over tensor and pipeline ranks
    dp_->gather_all();
    nn::NamedTensors whole = task_->model().named_parameters();
    if (tp_group_)
      whole = dist::gather_whole_parameters(whole, task_->parameter_shards(), *mesh_->tp());
    if (pipeline_) whole = dist::gather_stage_parameters(whole, *mesh_->pp(), device_);
    if (lead_) nn::write_safetensors(path, whole, meta);
    dp_->release_all();
    return;
  }
  // Under ZeRO-3 the parameters reach the host unit by unit, never whole on the device.
  const nn::NamedTensors weights = dist::host_parameters(*dp_, task_->model(), lead_);
  if (lead_) nn::write_safetensors(path, weights, meta);
}

void Trainer::print_closing_lines() {
  progress_->message(done_message(summary_, task_->rate_unit(), mfu_peak_, fp16_,
                                  training_memory(device_).peak_in_use));
  if (world_ > 1) progress_->message(communication_message(summary_.overlap, dir_.string()));
  if (opt_.plot && lead_) progress_->message("curves: " + plot_run(dir_.string()));
}

}  // namespace tessera::train
