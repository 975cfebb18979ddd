// The training loop: from a resolved Config to a run folder holding metrics.jsonl, the final
// weights (model.safetensors), the resolved config (config.toml), the curves (loss.png) and,
// with train.checkpoint_every, checkpoints to resume from (docs/CHECKPOINTS.md).
#pragma once
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint.h"
#include "ckpt/run_state.h"
#include "ckpt/signals.h"
#include "ckpt/whole_layout.h"
#include "core/tensor.h"
#include "dist/communicator.h"
#include "dist/data_parallel.h"
#include "dist/mesh.h"
#include "dist/pipeline_schedule.h"
#include "dist/trace.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "train/checkpointing.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/rank_timing.h"
#include "train/run_report.h"
#include "train/sample_account.h"
#include "train/step_decider.h"
#include "train/task.h"

namespace tessera::train {

// Called on every rank after each optimizer step (step counts from 1) with the loss averaged
// over ranks; tests use it to compare parameters across ranks (collectives are allowed). A step
// decided on the device whose verdict the host has not read yet passes NaN as its loss.
using StepCallback = std::function<void(int64_t step, double loss, dist::DataParallel& dp)>;

struct RunOptions {
  std::string out_dir;     // created if missing
  bool plot = true;        // draw loss.png at the end (needs gnuplot)
  FILE* console = stdout;  // progress and messages (rank 0 only)
  // The ranks to train on; null: from the launcher's environment (dist/world.h), i.e. one
  // process unless started by mpirun / srun. Only rank 0 writes metrics, weights, plots and
  // prints; every rank writes its trace.
  std::shared_ptr<dist::Communicator> comm;
  bool trace = false;  // write trace_rank0.json on one rank too (always with several)
  // Before the model is built, on every rank: whether the run fits this rank's memory, given
  // its bytes (the device's, or on the CPU the machine's memory over the ranks running on it)
  // and their description; returns "" when it fits, else why not, which every rank then fails
  // with. The CLI plugs in the planner's check (plan/fit_check.h, a layer above this one);
  // null: no check.
  std::function<std::string(const Config& cfg, int world, double capacity,
                            const std::string& capacity_text)>
      fit_check;
  // Time every kernel family, named kernel and communication wait of the steps after the first
  // (core/profiler.h) and write each rank's breakdown to RUN/profile_rank<R>.txt at the end.
  bool profile = false;
  // false: no evaluation at all, not even the last step's (the planner's runs: a plan is of
  // training steps, and its meta ranks have no real data-parallel peers to share batches with).
  bool evaluate = true;
  StepCallback on_step;
  // Called on this rank once a step's backward is queued, before its gradients are
  // synchronised: inside the compute time RankTiming measures (tests slow a rank with it).
  std::function<void(int64_t step)> before_gradient_sync;
  // "" starts afresh. "latest": continue from the newest checkpoint in out_dir/checkpoints that
  // verifies (newer ones that do not are reported and skipped; afresh when the run has none).
  // Otherwise a checkpoint folder. The config must match the checkpoint's (ckpt::resumable_key
  // lists what may change).
  std::string resume;
  // Catch SIGTERM and SIGINT while training: at the next step boundary every rank saves a
  // checkpoint and run_training returns with `interrupted` set (see ckpt/signals.h).
  bool handle_signals = false;
};

struct RunSummary {
  int64_t steps = 0;
  double final_loss = 0;     // training loss of the last step
  nlohmann::json last_eval;  // the final evaluation's metrics
  double seconds = 0;
  double items_per_s = 0;        // tokens or samples per second over the run (after the first step)
  double tflops_per_device = 0;  // model FLOPs per second per device over the same steps (GPT)
  std::vector<double> losses;    // every step's training loss (averaged over ranks)
  int world_size = 1;
  dist::MemoryReport memory;       // this rank's parameter, gradient and optimizer-state bytes
  dist::OverlapStats overlap;      // this rank's communication, and the part hidden by compute
  int64_t start_step = 0;          // the checkpoint's step when resumed, else 0
  int64_t bad_steps = 0;           // steps skipped for a non-finite loss or gradient (whole run)
  double loss_scale = 1;           // fp16: the dynamic loss scale at the end (1 otherwise)
  int64_t loss_scale_skipped = 0;  // steps the loss scaler skipped, bad steps included
  // Sample accounting's run digest at the end (sample_account.h); unknown when resumed from a
  // checkpoint without one.
  std::optional<uint64_t> samples_digest;
  bool interrupted = false;     // stopped by a signal after saving a checkpoint
  int stop_signal = 0;          // which one
  std::string last_checkpoint;  // the newest checkpoint folder this run saved ("" none)
  int64_t checkpoints_saved = 0;
  int64_t checkpoint_failures = 0;  // saves that failed (earlier checkpoints stay intact)
  std::set<int> slow_ranks;         // ranks named as slow (parallel.slow_rank_factor)
  // The last step's communication by mesh axis (StepResult::tp_bytes, pp_bytes).
  int64_t tp_bytes_per_step = -1, pp_bytes_per_step = -1;
};

// Trains on every rank of the communicator: each draws its rows of every global batch
// (train.batch_size must split evenly over ranks x train.micro_batches), and the engine of
// parallel.zero_stage keeps the models identical.
// (It builds a Trainer and runs it.)
RunSummary run_training(const Config& cfg, const RunOptions& opt);

// One training run in named parts. set_up() places the run on its ranks and device and builds
// the task, the data-parallel engine and the optimisation state (restored when resuming). Each
// step then runs its micro-batches (run_micro_batches: forward and backward, the part a pipeline
// schedule would replace), applies or skips the optimizer update, reports, evaluates and
// samples, checkpoints when due and stops everywhere on a signal. finish() writes the final
// weights, the trace and the summary. A Trainer runs once; every rank runs the same parts in
// the same order, since most of them are collective.
class Trainer {
 public:
  Trainer(const Config& cfg, const RunOptions& opt) : cfg_(cfg), opt_(opt) {}
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  RunSummary run();

 private:
  using Clock = std::chrono::steady_clock;

  // Set-up, in this order.
  void set_up();
  void connect_ranks();             // the communicator, the device, the stop-signal handlers
  void check_memory_fits();         // RunOptions::fit_check, on every rank alike
  void open_run_folder();           // the console, the checkpoint to resume, config.toml
  void build_model_and_engine();    // the task, equal weights on every rank, the DP engine
  void build_optimisation_state();  // lr schedule, loss scaler, loop state, sample accounting
  void open_records();              // checkpoints, metrics.jsonl, the opening lines

  // One optimizer step (`step` counts from 0): micro-batches, gradient sync, clipping, the
  // update or its skip.
  StepResult train_step(int64_t step);
  // Forward and backward of each of train.micro_batches, each loss scaled by
  // loss_scale / micro_batches, in the tracer's "forward" and "backward" spans; returns the
  // micro-batch losses (detached; not read yet).
  std::vector<Tensor> run_micro_batches(float loss_scale);
  // The same under pipeline parallelism: this rank's stages' forwards and backwards in the
  // schedule's order; the losses only on the last stage's rank. Sets r.pipeline_transfer.
  std::vector<Tensor> run_pipeline(float loss_scale, StepResult& r);
  // After the gradients are complete: the tied embedding's copies on the first and last
  // stages get the sum of their gradients.
  void sum_tied_embedding_grads();
  // Where this rank's parameters sit in the whole model (for checkpoints of a split model).
  ckpt::WholeModelLayout whole_layout() const;
  // Applies the update when the loss and gradient norm are finite; otherwise skips it as an
  // fp16 overflow (the scaler backs off) or a bad step (counted against train.max_bad_steps).
  void apply_or_skip_update(const StepResult& r, float loss_scale);
  // What the host does with a step's verdict, decided here or on the device: the messages of a
  // skipped step, the count of bad steps in a row and its limit.
  void note_outcome(int64_t step, int32_t outcome, double loss, double grad_norm, float scale_used,
                    float scale_after);
  // Steps decided on the device (decider_): whether the host must read their verdicts after
  // step `done` (it reports, evaluates, samples or saves then, or the verdicts fill up); and
  // the reading: every verdict noted, the losses recorded, the scaler and update count set from
  // the device's, and r (the newest step) given its loss, norm and the window's time per step.
  bool verdicts_due(int64_t done) const;
  void read_verdicts(StepResult* r);

  // After step r.step: the progress line and metrics record on logged steps, evaluation and
  // samples when due.
  void report(const StepResult& r);
  nlohmann::json log_step(const StepResult& r);  // the metrics record; prints the progress line
  int64_t host_waits_since_logged();
  nlohmann::json evaluate(int64_t step);  // on every rank; rank 0 prints the metrics
  void sample(int64_t step);              // on every rank; rank 0 prints the text

  // After step `done` (counting from 1).
  void checkpoint_if_due(int64_t done);
  ckpt::SaveResult save_checkpoint(bool async);
  bool handle_stop_signal(int64_t done);  // true: every rank stops here, checkpoint saved

  // The end of the run: the last save finished, the summary, final weights, trace and lines.
  RunSummary finish();
  void write_profile();  // RunOptions::profile: this rank's breakdown into the run folder
  void complete_summary();
  void save_final_weights();
  void print_closing_lines();

  bool is_last(int64_t done) const { return done == cfg_.train.steps; }

  const Config& cfg_;
  const RunOptions& opt_;
  // Declared in the order set_up() builds them: they are destroyed in reverse, the checkpoint
  // writer (waiting for a background save) before the engine and the communicator.
  DType compute_ = DType::f32;
  std::shared_ptr<dist::Communicator> comm_;
  Device device_;
  MfuPeak mfu_peak_;  // what MFU divides by, on device_ with this rank's threads
  int rank_ = 0, world_ = 1;
  bool lead_ = true;  // rank 0: the one that prints and writes the run's files
  // The ranks as a mesh (parallel.tp x data parallel); the engine runs over its dp axis, the
  // model is split over its tp axis (through tp_group_, when tp > 1).
  std::optional<dist::Mesh> mesh_;
  std::unique_ptr<dist::CommunicatorGroup> tp_group_, cp_group_;
  // Pipeline parallelism (parallel.pp > 1): the schedule each step runs, and the ranks of the
  // first and last stages, whose copies of a tied embedding sum their gradients.
  std::optional<dist::pipeline::Schedule> pipeline_;
  std::unique_ptr<dist::Communicator> embedding_group_;
  int64_t micro_ = 1;
  std::optional<ckpt::StopSignals> signals_;
  std::filesystem::path dir_;
  std::unique_ptr<FILE, int (*)(FILE*)> devnull_{nullptr, &std::fclose};
  std::optional<ProgressLine> progress_;
  std::optional<ckpt::VerifiedCheckpoint> resumed_;
  std::unique_ptr<Task> task_;
  std::optional<dist::Tracer> tracer_;
  std::unique_ptr<dist::DataParallel> dp_;
  std::optional<LRSchedule> schedule_;
  std::optional<DynamicLossScaler> scaler_;
  bool fp16_ = false;
  // On a GPU: each step's update decided on the device, so that a step that is not logged
  // never waits for it (step_decider.h).
  std::optional<StepDecider> decider_;
  int64_t host_waits_logged_ = -1;  // the device's host waits at the last record (-1: uncounted)
  Clock::time_point window_start_;  // the first unread verdict's step began
  ckpt::LoopState loop_;
  std::optional<SampleAccount> samples_;
  std::optional<RankTiming> timing_;
  std::optional<Checkpointing> checkpoints_;
  std::string config_toml_;
  std::optional<MetricsWriter> metrics_;
  RunSummary summary_;
  Clock::time_point run_start_, timed_start_;
};

}  // namespace tessera::train
