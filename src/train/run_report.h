// What a run tells its reader, as text and records: the metrics.jsonl record of a logged step,
// the slow-rank warning and the closing summary lines. The trainer (trainer.h) decides when.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/trace.h"
#include "optim/loss_scaler.h"
#include "train/mfu_peak.h"
#include "train/rank_timing.h"
#include "train/sample_account.h"

namespace tessera::train {

struct RunSummary;

// One optimizer step as the reports see it (this rank's timings; loss and norm are global).
struct StepResult {
  int64_t step = 0;  // the step's number counting from 1: the steps completed with it
  double loss = 0;   // averaged over micro-batches and ranks
  double lr = 0;
  double grad_norm = 0;
  double ms = 0;           // the step's wall time
  double items_per_s = 0;  // tokens or samples
  double tflops = 0;       // model FLOPs per second this rank's device ran (0: unknown)
  // Pipeline parallelism: the share of this rank's forward-backward time spent in transfers
  // (waiting for its neighbours included: the measured bubble); -1 without.
  double pipeline_transfer = -1;
  // This rank's communication in the step's forwards and backwards, by mesh axis: the
  // tensor-parallel collectives' payload and the pipeline's sent bytes (-1: no such axis).
  int64_t tp_bytes = -1, pp_bytes = -1;
};

// What a logged step's metrics record holds besides the step itself.
struct StepRecordParts {
  const char* rate_key = "";  // Task::rate_key
  MfuPeak mfu_peak;           // MFU's denominator (tflops 0: no MFU, source says why)
  const RankTiming::Report* times = nullptr;
  const SampleAccount::Digests* samples = nullptr;
  const DynamicLossScaler* fp16_scaler = nullptr;  // null without fp16
  int64_t peak_tensor_bytes = 0;  // this rank's tensor allocator peak so far (size classes)
  // The most times any rank waited for its device since the previous record (-1: not counted;
  // only the emulated device counts them).
  int64_t host_waits = -1;
};

// The metrics.jsonl record of a logged step (one JSON object per line; README lists the keys).
nlohmann::json step_record(const StepResult& r, const StepRecordParts& parts);

// The warning that names `rank` as slow (RankTiming::Report::newly_slow).
std::string slow_rank_warning(int rank, const RankTiming::Report& times, double slow_rank_factor);

// " val_loss 2.5085" for each evaluation metric.
std::string eval_text(const nlohmann::json& eval);

// "tessera: done: 60 steps in 2:55, final loss 2.4643, ..., 412 TFLOP/s per device, MFU 41.6% of
// 989.5 TFLOP/s (H100 SXM5 80GB datasheet, bf16), ...": the finished run in one line.
std::string done_message(const RunSummary& sum, const char* rate_unit, const MfuPeak& mfu_peak,
                         bool fp16, size_t peak_tensor_bytes);

// Several ranks: how much of the communication computation hid (rank 0's trace, after step 1).
std::string communication_message(const dist::OverlapStats& overlap, const std::string& run_dir);

}  // namespace tessera::train
