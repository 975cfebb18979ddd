// The training loop: from a resolved Config to a run folder holding metrics.jsonl, the final
// weights (model.safetensors), the resolved config (config.toml), the curves (loss.png) and,
// with train.checkpoint_every, checkpoints to resume from (docs/CHECKPOINTS.md).
#pragma once
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "dist/data_parallel.h"
#include "train/config.h"

namespace tessera::train {

// Called on every rank after each optimizer step (step counts from 1) with the loss averaged
// over ranks; tests use it to compare parameters across ranks (collectives are allowed).
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
};

// Trains on every rank of the communicator: each draws its rows of every global batch
// (train.batch_size must split evenly over ranks x train.micro_batches), and the engine of
// parallel.zero_stage keeps the models identical.
RunSummary run_training(const Config& cfg, const RunOptions& opt);

}  // namespace tessera::train
