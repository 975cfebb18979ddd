// `tessera plan`: what a training config will need and do on a cluster, before it runs there.
// The real trainer runs on the meta device as each pipeline stage's first rank (meta_run.h);
// its allocator peaks are the memory per rank, and its traces, priced by the cost model
// (cost_model.h) and replayed on the cluster's streams (timeline.h), the step time.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/cluster.h"
#include "plan/timeline.h"
#include "train/config.h"

namespace tessera::plan {

// One simulated rank's memory, in bytes.
struct RankMemory {
  int rank = 0, pp_stage = 0;
  double weights = 0, gradients = 0, optimizer = 0;  // kept between steps
  // The rest of the allocator's peak: activations, temporaries, communication buffers.
  double activations = 0;
  double peak_in_use = 0;      // the allocator's peak of live blocks (size classes)
  double reserved = 0;         // what its cache holds at the end: the device memory it takes
  double runtime_reserve = 0;  // GPUs: CUDA context, cuBLASLt workspace, NCCL buffers (assumed)
  // What the device shows taken at the end: the cache and the runtime.
  double total() const { return reserved + runtime_reserve; }
  // What the run needs to fit: the peak of live blocks and the runtime. The caching allocators
  // give their cache back and retry before an allocation fails (cuda/allocator.cu), so cached
  // blocks (reserved above the peak) never make a run fail.
  double required() const { return peak_in_use + runtime_reserve; }
};

struct Plan {
  std::string cluster;  // "h100x64 (8 nodes x 8 NVIDIA H100 SXM ...)"
  std::string layout;   // "64 ranks = pp 1 x dp 64 x cp 1 x tp 1, ZeRO-1, 4 micro-batches"
  int world = 1;
  double capacity = 0;  // memory per device
  std::vector<RankMemory> memory;
  Timeline timeline;
  double tokens_per_step = 0;  // the global batch (0 for image models)
  double model_flops_per_step = 0;
  double peak_flops = 0;    // per device: the datasheet's for the compute dtype (MFU's denominator)
  std::string peak_source;  // "H100 SXM5 80GB datasheet, bf16"
  double tokens_per_s = 0;
  double mfu = 0;             // model FLOPs / (step time x devices x peak)
  std::string timing_caveat;  // the cluster's (ClusterSpec::timing_caveat), or empty
  bool fits() const;          // max_required() <= capacity
  // The largest total() and required() over the simulated ranks.
  double max_total() const;
  double max_required() const;
};

// Plans `cfg` on `world` ranks of `cluster` (world 0: all of the cluster's devices).
Plan make_plan(const train::Config& cfg, const ClusterSpec& cluster, int world = 0);
// make_plan of a candidate layout (a search's, a fit check's fix): nullopt when the config
// rules (train::validate) or the trainer refuse it.
std::optional<Plan> plan_if_valid(const train::Config& cfg, const ClusterSpec& cluster,
                                  int world = 0);

// The report `tessera plan` prints, and its --json form.
std::string format_plan(const Plan& p);
nlohmann::json plan_json(const Plan& p);

}  // namespace tessera::plan
