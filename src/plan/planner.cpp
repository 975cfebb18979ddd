#include "plan/planner.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"
#include "plan/meta_run.h"
#include "train/model_kinds.h"
#include "train/trainer_setup.h"

namespace tessera::plan {
namespace {

// What a GPU process holds beyond its tensors: the CUDA context and module images (about
// 0.5 GiB on Hopper), cuBLASLt's workspace and NCCL's channel buffers. An assumption, not a
// measurement: the first GPU session should replace it (docs/PLAN.md).
constexpr double kGpuRuntimeReserve = 1.0 * (1 << 30);

std::string layout_text(const train::Config& cfg, int world) {
  const auto& p = cfg.parallel;
  const int64_t dp = world / std::max<int64_t>(1, p.tp * p.pp * p.cp);
  std::string s = fmt::format("{} rank{} = pp {} x dp {} x cp {} x tp {}", world,
                              world == 1 ? "" : "s", p.pp, dp, p.cp, p.tp);
  if (p.pp > 1)
    s += fmt::format(
        " ({}{})", p.pp_schedule,
        p.pp_virtual_stages > 1 ? fmt::format(", {} virtual", p.pp_virtual_stages) : std::string());
  if (p.sequence_parallel) s += ", sequence parallel";
  s += fmt::format(", ZeRO-{}, {} micro-batch{}, recompute {}, {}", p.zero_stage,
                   cfg.train.micro_batches, cfg.train.micro_batches == 1 ? "" : "es",
                   cfg.model.recompute, cfg.train.precision);
  return s;
}

double gib(double b) {
  return b / double(1 << 30);
}

}  // namespace

bool Plan::fits() const {
  return capacity <= 0 || max_required() <= capacity;
}

double Plan::max_total() const {
  double m = 0;
  for (const RankMemory& r : memory) m = std::max(m, r.total());
  return m;
}

double Plan::max_required() const {
  double m = 0;
  for (const RankMemory& r : memory) m = std::max(m, r.required());
  return m;
}

Plan make_plan(const train::Config& cfg, const ClusterSpec& cluster, int world) {
  if (world <= 0) world = cluster.gpus();
  TS_CHECK(world <= cluster.gpus(), "plan: {} ranks do not fit cluster '{}' of {} devices", world,
           cluster.name, cluster.gpus());
  Plan p;
  p.world = world;
  p.cluster =
      fmt::format("{} ({} node{} x {} {})", cluster.name, cluster.nodes,
                  cluster.nodes == 1 ? "" : "s", cluster.gpus_per_node, cluster.device.name);
  p.layout = layout_text(cfg, world);
  p.timing_caveat = cluster.timing_caveat;
  p.capacity = cluster.device.memory_bytes;
  const meta::AllocatorModel model =
      cluster.host ? meta::AllocatorModel::host : meta::AllocatorModel::cuda;
  std::vector<RankTrace> traces;
  for (int r : representative_ranks(cfg, world)) {
    RankRun run = run_rank_on_meta(cfg, r, world, model);
    RankMemory m;
    m.rank = r;
    m.pp_stage = run.pp_stage;
    m.weights = double(run.persistent.param_bytes);
    m.gradients = double(run.persistent.grad_bytes);
    m.optimizer = double(run.persistent.optimizer_bytes);
    m.peak_in_use = double(run.memory.peak_in_use);
    m.reserved = double(run.memory.reserved);
    m.activations = std::max(0.0, m.peak_in_use - m.weights - m.gradients - m.optimizer);
    m.runtime_reserve = cluster.host ? 0 : kGpuRuntimeReserve;
    p.memory.push_back(m);
    traces.push_back(RankTrace{r, std::move(run.step)});
  }
  ClusterSpec timed = cluster;
  if (cluster.host && cfg.parallel.overlap != "auto")
    timed.collectives_overlap_compute = cfg.parallel.overlap == "on";
  p.timeline = simulate(timed, traces);
  if (train::model_kind(cfg.model.kind).language_model)
    p.tokens_per_step = double(cfg.train.batch_size) * double(cfg.train.seq_len);
  p.model_flops_per_step = model_flops_per_step(cfg);
  // MFU against the datasheet peak, as the trainer's metrics count it (train/mfu_peak.h), not
  // against the rates the kernels were timed by (the local CPU's are measured).
  const DType compute = train::compute_dtype(cfg);
  p.peak_flops = cluster.device.datasheet.gemm(compute).flops;
  p.peak_source = cluster.device.datasheet.describe(compute);
  const double step = p.timeline.step_seconds;
  if (step > 0) {
    p.tokens_per_s = p.tokens_per_step / step;
    if (p.peak_flops > 0) p.mfu = p.model_flops_per_step / (step * world * p.peak_flops);
  }
  return p;
}

std::optional<Plan> plan_if_valid(const train::Config& cfg, const ClusterSpec& cluster, int world) {
  try {
    train::validate(cfg, "plan");
    return make_plan(cfg, cluster, world);
  } catch (const Error&) {
    return std::nullopt;
  }
}

std::string format_plan(const Plan& p) {
  std::string s;
  s += fmt::format("cluster: {}\nlayout:  {}\n", p.cluster, p.layout);
  s +=
      fmt::format("memory per rank (GiB){}:\n",
                  p.capacity > 0 ? fmt::format(", device {:.1f}", gib(p.capacity)) : std::string());
  s += "  rank stage  weights  grads  optim  activ.  peak   reserved  runtime  total\n";
  for (const RankMemory& m : p.memory)
    s += fmt::format(
        "  {:>4} {:>5} {:>8.2f} {:>6.2f} {:>6.2f} {:>7.2f} {:>6.2f} {:>9.2f} {:>8.2f} "
        "{:>6.2f}\n",
        m.rank, m.pp_stage, gib(m.weights), gib(m.gradients), gib(m.optimizer), gib(m.activations),
        gib(m.peak_in_use), gib(m.reserved), gib(m.runtime_reserve), gib(m.total()));
  if (p.capacity > 0)
    s += fmt::format(
        "  {}: largest peak + runtime {:.2f} GiB {} {:.1f} GiB (with the cache {:.2f} GiB)\n",
        p.fits() ? "fits" : "DOES NOT FIT", gib(p.max_required()), p.fits() ? "of" : ">",
        gib(p.capacity), gib(p.max_total()));
  const Timeline& t = p.timeline;
  s += fmt::format(
      "step: {:.4g} s = compute {:.4g} s + exposed communication {:.4g} s + bubble {:.4g} s "
      "(communication {:.4g} s in all)\n",
      t.step_seconds, t.compute_seconds, t.exposed_comm_seconds, t.bubble_seconds, t.comm_seconds);
  if (!p.timing_caveat.empty()) s += fmt::format("  note: {}\n", p.timing_caveat);
  if (p.tokens_per_step > 0) s += fmt::format("tokens/s: {:.4g}\n", p.tokens_per_s);
  if (p.mfu > 0)
    s += fmt::format("MFU: {:.1f}% of {:.4g} TFLOP/s per device ({})\n", 100 * p.mfu,
                     p.peak_flops / 1e12, p.peak_source);
  return s;
}

nlohmann::json plan_json(const Plan& p) {
  nlohmann::json j;
  j["cluster"] = p.cluster;
  j["layout"] = p.layout;
  j["world"] = p.world;
  j["device_memory_bytes"] = p.capacity;
  j["fits"] = p.fits();
  for (const RankMemory& m : p.memory)
    j["memory"].push_back({{"rank", m.rank},
                           {"pp_stage", m.pp_stage},
                           {"weights", m.weights},
                           {"gradients", m.gradients},
                           {"optimizer", m.optimizer},
                           {"activations", m.activations},
                           {"peak_in_use", m.peak_in_use},
                           {"reserved", m.reserved},
                           {"runtime_reserve", m.runtime_reserve},
                           {"total", m.total()},
                           {"required", m.required()}});
  const Timeline& t = p.timeline;
  j["step_seconds"] = t.step_seconds;
  j["compute_seconds"] = t.compute_seconds;
  j["exposed_comm_seconds"] = t.exposed_comm_seconds;
  j["bubble_seconds"] = t.bubble_seconds;
  j["comm_seconds"] = t.comm_seconds;
  j["timing_caveat"] = p.timing_caveat;
  j["tokens_per_s"] = p.tokens_per_s;
  j["model_flops_per_step"] = p.model_flops_per_step;
  j["peak_flops"] = p.peak_flops;
  j["peak_source"] = p.peak_source;
  j["mfu"] = p.mfu;
  for (const auto& [name, tot] : t.kernels)
    j["kernels"][name] = {{"count", tot.count}, {"seconds", tot.seconds}, {"flops", tot.flops}};
  for (const auto& [name, tot] : t.collectives)
    j["collectives"][name] = {{"count", tot.count}, {"seconds", tot.seconds}, {"bytes", tot.bytes}};
  return j;
}

}  // namespace tessera::plan
