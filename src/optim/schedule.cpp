#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace tessera {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return ScheduleKind::constant;
  if (name == "cosine") return ScheduleKind::cosine;
  fail("unknown lr schedule '{}' (valid: constant, cosine)", name);
}

const char* schedule_kind_name(ScheduleKind k) {
  return k == ScheduleKind::constant ? "constant" : "cosine";
}

LRSchedule::LRSchedule(const ScheduleOptions& opt) : opt_(opt) {
  const char* kind = schedule_kind_name(opt.kind);
  TS_CHECK(std::isfinite(opt.lr) && opt.lr >= 0, "lr schedule '{}': lr {} must be finite and >= 0",
           kind, opt.lr);
  TS_CHECK(opt.warmup_steps >= 0, "lr schedule '{}': warmup_steps {} is negative", kind,
           opt.warmup_steps);
  if (opt.kind == ScheduleKind::cosine) {
    TS_CHECK(opt.min_lr >= 0 && opt.min_lr <= opt.lr,
             "lr schedule 'cosine': min_lr {} must lie in [0, lr = {}]", opt.min_lr, opt.lr);
    TS_CHECK(opt.total_steps > opt.warmup_steps,
             "lr schedule 'cosine': total_steps {} must exceed warmup_steps {}", opt.total_steps,
             opt.warmup_steps);
  }
}

float LRSchedule::lr(int64_t step) const {
  TS_CHECK(step >= 0, "lr schedule '{}': step {} is negative", schedule_kind_name(opt_.kind), step);
  const double peak = opt_.lr;
  if (step < opt_.warmup_steps)
    return float(peak * double(step + 1) / double(opt_.warmup_steps + 1));
  if (opt_.kind == ScheduleKind::constant) return opt_.lr;
  const int64_t decay_steps = std::max<int64_t>(1, opt_.total_steps - 1 - opt_.warmup_steps);
  const double progress = std::min(1.0, double(step - opt_.warmup_steps) / double(decay_steps));
  const double lo = opt_.min_lr;
  return float(lo + 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) * (peak - lo));
}

}  // namespace tessera
