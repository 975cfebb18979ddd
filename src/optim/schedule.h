// Learning-rate schedules: lr(step) for step = 0, 1, ... (the step about to be taken).
//   constant: linear warm-up (if any), then lr.
//   cosine:   linear warm-up, then half a cosine from lr down to min_lr, reached at the last
//             step total_steps - 1 and held after it.
// Warm-up ramps lr * (step + 1) / (warmup_steps + 1): never zero, and it meets lr at
// step == warmup_steps without repeating a value.
#pragma once
#include <cstdint>
#include <string>

namespace tessera {

enum class ScheduleKind { constant, cosine };

// "constant" or "cosine"; throws Error naming the valid names for anything else.
ScheduleKind parse_schedule_kind(const std::string& name);
const char* schedule_kind_name(ScheduleKind k);

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::constant;
  float lr = 1e-3f;    // peak
  float min_lr = 0.f;  // cosine: the final value
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // cosine: the length of the run (> warmup_steps)
};

class LRSchedule {
 public:
  explicit LRSchedule(const ScheduleOptions& opt);
  float lr(int64_t step) const;
  float operator()(int64_t step) const { return lr(step); }
  const ScheduleOptions& options() const { return opt_; }

 private:
  ScheduleOptions opt_;
};

}  // namespace tessera
