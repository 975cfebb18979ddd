// A per-rank timeline in Chrome's trace-event format (a JSON object with "traceEvents"; Perfetto
// and chrome://tracing open it). Spans are complete events ("ph": "X") on named tracks: the
// training thread's compute (forward, backward, the wait for communication, the optimizer step)
// and one track per gradient bucket for its communication, from the moment it started to the
// moment it was seen complete, so overlap with the backward pass shows as bars side by side.
//
// overlap() measures what the end-of-run summary prints: of the time some communication was in
// flight, the share during which the training thread was computing (forward, backward,
// optimizer), i.e. hidden behind computation rather than waited for.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace tessera::dist {

enum class SpanKind { compute, wait, comm };

struct TraceSpan {
  std::string name;
  SpanKind kind;
  int track;       // 0 = training thread; 1 + i = communication track i
  double begin_s;  // monotonic_seconds()
  double end_s;
  int64_t step;
};

struct OverlapStats {
  double comm_s = 0;    // time with any communication in flight (union of comm spans)
  double hidden_s = 0;  // part of it during compute spans
  int64_t comm_spans = 0;
  int64_t started_in_backward = 0;  // comm spans that began inside a "backward" span
  double share() const { return comm_s > 0 ? hidden_s / comm_s : 0; }
};

class Tracer {
 public:
  // Spans of the first keep_steps steps go to the file; later steps only add to the overlap
  // statistics (a long run's trace would otherwise grow without bound).
  explicit Tracer(int rank = 0, bool enabled = true, int64_t keep_steps = 200)
      : rank_(rank), enabled_(enabled), keep_steps_(keep_steps) {}
  bool enabled() const { return enabled_; }

  void add(TraceSpan span);
  // Names a track ("compute", "bucket 0 (4.1 MB)").
  void name_track(int track, const std::string& name);
  // Starts step `step`, closing the current one (its statistics are kept).
  void set_step(int64_t step);
  int64_t step() const { return step_; }

  std::vector<TraceSpan> spans() const;
  // Over steps >= first_step (skip warm-up steps that build primitives).
  OverlapStats overlap(int64_t first_step = 0) const;
  // Writes the trace-event JSON (timestamps in microseconds from the first span).
  void write(const std::string& path) const;

 private:
  int rank_;
  bool enabled_;
  int64_t keep_steps_;
  int64_t step_ = 0;
  mutable std::mutex mu_;
  std::vector<TraceSpan> spans_;
  std::vector<std::pair<int64_t, OverlapStats>> closed_;  // per finished step
  std::vector<std::pair<int, std::string>> track_names_;
};

// Records a compute or wait span on track 0 from construction to destruction.
class ScopedSpan {
 public:
  ScopedSpan(Tracer* t, const char* name, SpanKind kind = SpanKind::compute);
  ~ScopedSpan();
  ScopedSpan(const ScopedSpan&) = delete;
  ScopedSpan& operator=(const ScopedSpan&) = delete;

 private:
  Tracer* t_;
  const char* name_;
  SpanKind kind_;
  double begin_;
};

}  // namespace tessera::dist
