#include "core/profiler.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace tessera::prof {

namespace detail {
std::atomic<bool> g_enabled{false};
}

namespace {

// Everything below is touched only by the recording thread (g_owner) while profiling is on.
std::atomic<std::thread::id> g_owner{};

struct Slot {
  const char* name;  // null: the family's own slot
  Family family;
  int64_t nanos = 0;
  uint64_t calls = 0;
};
std::vector<Slot> g_slots;  // the first kFamilies slots are the families
std::array<double, kFamilies> g_flops{};
int16_t g_current = -1;  // the running slot
int64_t g_start = 0;     // when it (re)started

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void init_slots() {
  if (!g_slots.empty()) return;
  for (int i = 0; i < kFamilies; ++i) g_slots.push_back({nullptr, Family(i)});
}

int16_t slot_for(Family f, const char* name) {
  if (!name) return int16_t(f);
  for (size_t i = kFamilies; i < g_slots.size(); ++i)
    if (g_slots[i].family == f &&
        (g_slots[i].name == name || std::strcmp(g_slots[i].name, name) == 0))
      return int16_t(i);
  g_slots.push_back({name, f});
  return int16_t(g_slots.size() - 1);
}

bool recording_thread() {
  return std::this_thread::get_id() == g_owner.load(std::memory_order_relaxed);
}

}  // namespace

const char* family_name(Family f) {
  switch (f) {
    case Family::gemm:
      return "gemm";
    case Family::attention:
      return "attention";
    case Family::norm:
      return "norm";
    case Family::elementwise:
      return "elementwise";
    case Family::cast:
      return "cast";
    case Family::embed_loss:
      return "embed+loss";
    case Family::optimizer:
      return "optimizer";
    case Family::data:
      return "data";
    case Family::autograd:
      return "autograd";
    case Family::comm:
      return "comm";
    case Family::kCount:
      break;
  }
  return "?";
}

void set_enabled(bool on) {
  g_owner.store(std::this_thread::get_id());
  init_slots();
  g_current = -1;
  detail::g_enabled.store(on, std::memory_order_relaxed);
}

void add_flops(Family f, double flops) {
  if (enabled() && recording_thread()) g_flops[size_t(f)] += flops;
}

double Totals::total_seconds() const {
  double s = 0;
  for (double x : seconds) s += x;
  return s;
}

Totals totals() {
  init_slots();
  Totals t;
  t.flops = g_flops;
  for (size_t i = 0; i < g_slots.size(); ++i) {
    const Slot& s = g_slots[i];
    const size_t f = size_t(s.family);
    t.seconds[f] += double(s.nanos) * 1e-9;
    t.calls[f] += s.calls;
    if (s.name) t.kernels.push_back({s.name, s.family, double(s.nanos) * 1e-9, s.calls});
  }
  return t;
}

void reset() {
  init_slots();
  for (Slot& s : g_slots) s.nanos = 0, s.calls = 0;
  g_flops = {};
}

void Scope::begin(Family f, const char* name) {
  if (!recording_thread()) return;
  const int64_t now = now_ns();
  if (g_current >= 0) g_slots[size_t(g_current)].nanos += now - g_start;  // the enclosing pauses
  prev_ = g_current;
  g_current = slot_for(f, name);
  g_slots[size_t(g_current)].calls++;
  g_start = now;
  active_ = true;
}

void Scope::end() {
  const int64_t now = now_ns();
  if (g_current >= 0) g_slots[size_t(g_current)].nanos += now - g_start;
  g_current = prev_;  // the enclosing scope resumes
  g_start = now;
}

std::string format_breakdown(const Totals& t, double step_seconds, int64_t steps) {
  const double n = double(std::max<int64_t>(steps, 1));
  std::string s = "step breakdown (exclusive time per op family, mean per step):\n";
  s += fmt::format("  {:<12} {:>9} {:>7} {:>8} {:>12}\n", "family", "ms", "share", "calls",
                   "GFLOP/s");
  auto share = [&](double seconds) { return step_seconds > 0 ? 100 * seconds / step_seconds : 0; };
  double tracked = 0;
  for (int i = 0; i < kFamilies; ++i) {
    const double sec = t.seconds[size_t(i)] / n;
    tracked += sec;
    if (t.calls[size_t(i)] == 0) continue;
    const std::string rate =
        t.flops[size_t(i)] > 0 && t.seconds[size_t(i)] > 0
            ? fmt::format("{:.0f}", t.flops[size_t(i)] / t.seconds[size_t(i)] * 1e-9)
            : std::string();
    s += fmt::format("  {:<12} {:9.1f} {:6.1f}% {:8.0f} {:>12}\n", family_name(Family(i)),
                     sec * 1e3, share(sec), double(t.calls[size_t(i)]) / n, rate);
  }
  const double other = step_seconds - tracked;
  s += fmt::format(
      "  {:<12} {:9.1f} {:6.1f}%   (op dispatch, allocation, checks: the rest of the step)\n",
      "untracked", other * 1e3, share(other));
  s += "\nby kernel (mean per step):\n";
  std::vector<KernelTotal> k = t.kernels;
  std::stable_sort(k.begin(), k.end(), [](auto& a, auto& b) { return a.seconds > b.seconds; });
  for (const KernelTotal& e : k)
    if (e.calls)
      s += fmt::format("  {:<12} {:9.2f} ms {:6.1f}% {:8.1f} calls  {}\n", family_name(e.family),
                       e.seconds / n * 1e3, share(e.seconds / n), double(e.calls) / n, e.name);
  return s;
}

}  // namespace tessera::prof
