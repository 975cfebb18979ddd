#include "dist/trace.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "dist/clock.h"

namespace tessera::dist {
namespace {

using Interval = std::pair<double, double>;

// Sorted, disjoint intervals covering the same time as `v`.
std::vector<Interval> merge(std::vector<Interval> v) {
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (const Interval& i : v) {
    if (i.second <= i.first) continue;
    if (!out.empty() && i.first <= out.back().second)
      out.back().second = std::max(out.back().second, i.second);
    else
      out.push_back(i);
  }
  return out;
}

double length(const std::vector<Interval>& v) {
  double s = 0;
  for (const Interval& i : v) s += i.second - i.first;
  return s;
}

// Length of the intersection of two sorted, disjoint interval lists.
double intersection(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  double s = 0;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const double lo = std::max(a[i].first, b[j].first);
    const double hi = std::min(a[i].second, b[j].second);
    if (hi > lo) s += hi - lo;
    (a[i].second < b[j].second) ? ++i : ++j;
  }
  return s;
}

}  // namespace

void Tracer::add(TraceSpan span) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  spans_.push_back(std::move(span));
}

void Tracer::name_track(int track, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [t, n] : track_names_)
    if (t == track) {
      n = name;
      return;
    }
  track_names_.emplace_back(track, name);
}

std::vector<TraceSpan> Tracer::spans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spans_;
}

namespace {

// The overlap statistics of a set of spans.
OverlapStats measure(const std::vector<const TraceSpan*>& spans) {
  std::vector<Interval> comm, compute, backward;
  for (const TraceSpan* s : spans) {
    if (s->kind == SpanKind::comm) comm.emplace_back(s->begin_s, s->end_s);
    if (s->kind == SpanKind::compute) compute.emplace_back(s->begin_s, s->end_s);
    if (s->kind == SpanKind::compute && s->name == "backward")
      backward.emplace_back(s->begin_s, s->end_s);
  }
  OverlapStats st;
  const std::vector<Interval> b = merge(backward);
  st.comm_spans = int64_t(comm.size());
  for (const Interval& c : comm)
    for (const Interval& x : b)
      if (c.first >= x.first && c.first < x.second) {
        ++st.started_in_backward;
        break;
      }
  const std::vector<Interval> c = merge(std::move(comm)), k = merge(std::move(compute));
  st.comm_s = length(c);
  st.hidden_s = intersection(c, k);
  return st;
}

void add_to(OverlapStats& total, const OverlapStats& s) {
  total.comm_s += s.comm_s;
  total.hidden_s += s.hidden_s;
  total.comm_spans += s.comm_spans;
  total.started_in_backward += s.started_in_backward;
}

}  // namespace

void Tracer::set_step(int64_t step) {
  if (!enabled_ || step == step_) return;
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<const TraceSpan*> current;
  for (const TraceSpan& s : spans_)
    if (s.step == step_) current.push_back(&s);
  closed_.emplace_back(step_, measure(current));
  if (step_ >= keep_steps_)
    std::erase_if(spans_, [&](const TraceSpan& s) { return s.step == step_; });
  step_ = step;
}

OverlapStats Tracer::overlap(int64_t first_step) const {
  std::lock_guard<std::mutex> lock(mu_);
  OverlapStats total;
  for (const auto& [step, st] : closed_)
    if (step >= first_step) add_to(total, st);
  std::vector<const TraceSpan*> open;
  for (const TraceSpan& s : spans_)
    if (s.step == step_ && s.step >= first_step) open.push_back(&s);
  add_to(total, measure(open));
  return total;
}

void Tracer::write(const std::string& path) const {
  std::vector<TraceSpan> all = spans();
  double t0 = 0;
  for (size_t i = 0; i < all.size(); ++i)
    t0 = i == 0 ? all[i].begin_s : std::min(t0, all[i].begin_s);
  nlohmann::json events = nlohmann::json::array();
  events.push_back({{"name", "process_name"},
                    {"ph", "M"},
                    {"pid", rank_},
                    {"tid", 0},
                    {"args", {{"name", fmt::format("rank {}", rank_)}}}});
  std::vector<std::pair<int, std::string>> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    names = track_names_;
  }
  for (const auto& [track, name] : names)
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", rank_},
                      {"tid", track},
                      {"args", {{"name", name}}}});
  for (const TraceSpan& s : all) {
    const char* cat = s.kind == SpanKind::comm   ? "comm"
                      : s.kind == SpanKind::wait ? "wait"
                                                 : "compute";
    events.push_back({{"name", s.name},
                      {"cat", cat},
                      {"ph", "X"},
                      {"pid", rank_},
                      {"tid", s.track},
                      {"ts", (s.begin_s - t0) * 1e6},
                      {"dur", std::max(0.0, s.end_s - s.begin_s) * 1e6},
                      {"args", {{"step", s.step}}}});
  }
  nlohmann::json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  try {
    write_file_atomically(path, doc.dump());
  } catch (const Error& e) {
    fail("trace: cannot write '{}': {}", path, e.what());
  }
}

ScopedSpan::ScopedSpan(Tracer* t, const char* name, SpanKind kind)
    : t_(t && t->enabled() ? t : nullptr),
      name_(name),
      kind_(kind),
      begin_(t_ ? monotonic_seconds() : 0) {}

ScopedSpan::~ScopedSpan() {
  if (t_) t_->add({name_, kind_, 0, begin_, monotonic_seconds(), t_->step()});
}

}  // namespace tessera::dist
