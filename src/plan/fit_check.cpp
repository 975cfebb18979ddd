#include "plan/fit_check.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/backend.h"
#include "core/error.h"
#include "plan/cluster.h"
#include "plan/planner.h"
#include "plan/search.h"

namespace tessera::plan {
namespace {

double gib(double b) {
  return b / double(1 << 30);
}

// Devices of `capacity` bytes, enough 8-GPU nodes for `world` ranks: the memory figures are the
// allocator's, whatever the links. A CPU run keeps the host allocator's books and the CPU's ops.
ClusterSpec devices_of(double capacity, int world, bool host) {
  ClusterSpec c = builtin_node("h100");
  c.nodes = std::max(1, (world + c.gpus_per_node - 1) / c.gpus_per_node);
  c.device.memory_bytes = capacity;
  c.name = "this run's devices";
  c.host = host;
  return c;
}

}  // namespace

FitCheck check_fit(const train::Config& cfg, int world, double capacity,
                   const std::string& capacity_text) {
  FitCheck r;
  r.capacity = capacity;
  const ClusterSpec cluster = devices_of(capacity, world, cfg.train.device != "cuda");
  const Plan own = make_plan(cfg, cluster, world);
  r.predicted = own.max_required();
  r.fits = own.fits();
  if (r.fits) return r;

  // Each step on top of the ones before; a step the rules refuse is undone.
  train::Config c = cfg;
  bool fixed = false;
  auto attempt = [&](const train::Config& next) {
    const std::optional<Plan> p = plan_if_valid(next, cluster, world);
    if (!p) return false;  // refused: keep c as it was
    c = next;
    if (p->fits()) {
      fixed = true;
      r.fixed_predicted = p->max_required();
    }
    return true;
  };
  const auto& p = cfg.parallel;
  const int64_t dp = world / std::max<int64_t>(1, p.tp * p.pp * p.cp);
  if (c.model.recompute != "blocks") {
    train::Config n = c;
    n.model.recompute = "blocks";
    attempt(n);
  }
  while (!fixed && c.train.batch_size % (dp * c.train.micro_batches * 2) == 0) {
    train::Config n = c;
    n.train.micro_batches *= 2;
    if (!attempt(n)) break;
  }
  for (int64_t z = c.parallel.zero_stage + 1; !fixed && dp > 1 && z <= 3; ++z) {
    train::Config n = c;
    n.parallel.zero_stage = z;
    attempt(n);
  }
  if (!fixed && c.parallel.tp > 1 && c.parallel.sequence_parallel == 0) {
    train::Config n = c;
    n.parallel.sequence_parallel = 1;
    attempt(n);
  }
  r.message = fmt::format(
      "train.device = \"{}\": the run is predicted not to fit: {:.2f} GiB per rank (the "
      "largest, {} rank{}) > {}. ",
      cfg.train.device, gib(r.predicted), world, world == 1 ? "" : "s",
      capacity_text.empty() ? fmt::format("{:.2f} GiB of device memory", gib(capacity))
                            : capacity_text);
  if (fixed) {
    r.fix = layout_overrides(cfg, c);
    r.message += fmt::format(
        "It would fit with the overrides `{}` ({:.2f} GiB predicted): pass them "
        "after the config",
        fmt::join(r.fix, " "), gib(r.fixed_predicted));
  } else {
    r.message +=
        "Neither recomputation, more micro-batches, ZeRO nor sequence parallelism makes it fit: "
        "more ranks or a smaller batch / seq_len (`tessera plan CONFIG --search --cluster ...` "
        "ranks the layouts that fit)";
  }
  r.message += "; --no-fit-check skips this check when the prediction is wrong (docs/PLAN.md)";
  return r;
}

}  // namespace tessera::plan
