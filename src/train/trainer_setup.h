// The parts of a run's set-up that read only the config, the run folder and the checkpoint to
// resume from: the trainer (trainer.h) builds its engine, optimizer and loss scaler from them.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "ckpt/checkpoint.h"
#include "core/dtype.h"
#include "dist/communicator.h"
#include "dist/consistency.h"
#include "dist/data_parallel.h"
#include "dist/pipeline_schedule.h"
#include "nn/module.h"
#include "nn/tensor_parallel.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "train/config.h"
#include "train/metrics.h"

namespace tessera::train {

// train.precision as the dtype autocast computes in.
DType compute_dtype(const Config& cfg);

// fp16 needs a dynamic loss scale (its range ends at 65504 and its small values flush to zero);
// f32 and bf16 (f32's range) train without one: the scaler then stays at 1.
LossScalerOptions loss_scaler_options(const Config& cfg);

// The engine of parallel.zero_stage and its optimizer, from the parallel.* and optim.* keys.
dist::DataParallelOptions parallel_options(const Config& cfg);

// The learning-rate schedule of the optim.* keys over train.steps.
ScheduleOptions schedule_options(const Config& cfg);

// What every rank must agree on: each config key's value and each parameter's name and whole
// shape (`shards`, when the model is split over tensor-parallel ranks, gives those; empty: the
// parameters' own).
// parallel.pp_schedule's schedule kind.
dist::pipeline::ScheduleKind pipeline_kind(const std::string& name);

dist::Entries job_identity(const Config& cfg, nn::Module& model,
                           const std::vector<nn::TensorShard>& shards = {});
// Its two halves: the config keys, and the parameters.
dist::Entries job_identity(const Config& cfg);
dist::Entries parameter_identity(nn::Module& model, const std::vector<nn::TensorShard>& shards);

void write_text(const std::filesystem::path& p, const std::string& s);

// A resumed run keeps the metrics of the steps up to its checkpoint and drops the later ones
// (they are trained again), and any line a kill cut short.
void keep_metrics_up_to(const std::filesystem::path& path, int64_t step);

// Collective. Rank 0 picks the checkpoint that `resume` (RunOptions::resume) names in the run
// folder `out_dir` and every rank learns it and verifies it: nullopt for a fresh start; an
// error that stops the run is thrown on every rank alike.
std::optional<ckpt::VerifiedCheckpoint> resolve_resume(const Config& cfg, const std::string& resume,
                                                       const std::string& out_dir,
                                                       dist::Communicator& comm,
                                                       ProgressLine& progress);

}  // namespace tessera::train
