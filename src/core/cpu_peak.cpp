#include "core/cpu_peak.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include <fmt/format.h>

namespace tessera {
namespace {

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

double to_double(std::string_view s) {
  double v = 0;
  s = trim(s);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && end == s.data() + s.size() ? v : 0;
}

bool has_word(std::string_view words, std::string_view w) {
  std::istringstream in{std::string(words)};
  std::string tok;
  while (in >> tok)
    if (tok == w) return true;
  return false;
}

std::string read_text(const char* path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A unit that runs GEMMs and its FLOP per cycle per core (cpu_peak.h).
struct Unit {
  const char* name = nullptr;  // null: none known
  int flops_per_cycle = 0;
};

Unit f32_unit(const CpuInfo& c) {
  if (c.avx512f && c.fma) return {"AVX-512 FMA", 64};
  if (c.fma) return {"AVX2 FMA", 32};
  return {};
}

Unit bf16_unit(const CpuInfo& c, bool on_amx) {
  if (on_amx && c.amx_bf16) return {"AMX-BF16", 1024};
  if (c.avx512_bf16) return {"AVX512-BF16", 128};
  return f32_unit(c);  // oneDNN converts bf16 to f32
}

PeakFigure figure(const CpuInfo& c, int cores, Unit u) {
  if (c.clock_hz <= 0) return {0, "CPU: clock unknown"};
  if (!u.name) return {0, "CPU: no FMA unit the peak formula knows (flags: no fma)"};
  return {double(cores) * c.clock_hz * u.flops_per_cycle,
          fmt::format("CPU: {} core{} x {:.2f} GHz ({}) x {} FLOP/cycle ({})", cores,
                      cores == 1 ? "" : "s", c.clock_hz / 1e9, c.clock_is_max ? "max" : "nominal",
                      u.flops_per_cycle, u.name)};
}

}  // namespace

CpuInfo parse_cpu_info(std::string_view proc_cpuinfo, std::string_view max_freq_khz) {
  CpuInfo c;
  std::set<std::pair<std::string, std::string>> cores;  // (physical id, core id)
  std::string physical_id;
  int processors = 0;
  double mhz = 0;
  bool flags_seen = false;
  std::istringstream in{std::string(proc_cpuinfo)};
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string_view key = trim(std::string_view(line).substr(0, colon));
    const std::string_view value = trim(std::string_view(line).substr(colon + 1));
    if (key == "processor") ++processors;
    if (key == "model name" && c.model.empty()) c.model = value;
    if (key == "cpu MHz" && mhz == 0) mhz = to_double(value);
    if (key == "physical id") physical_id = value;
    if (key == "core id") cores.emplace(physical_id, value);
    if (key == "flags" && !flags_seen) {  // every processor lists the same
      flags_seen = true;
      c.fma = has_word(value, "fma");
      c.avx512f = has_word(value, "avx512f");
      c.avx512_bf16 = has_word(value, "avx512_bf16");
      c.amx_bf16 = has_word(value, "amx_bf16");
    }
  }
  c.cores = cores.empty() ? processors : int(cores.size());
  if (const double khz = to_double(max_freq_khz); khz > 0) {
    c.clock_hz = khz * 1e3;
    c.clock_is_max = true;
  } else {
    c.clock_hz = mhz * 1e6;
  }
  return c;
}

const CpuInfo& this_cpu_info() {
  static const CpuInfo info =
      parse_cpu_info(read_text("/proc/cpuinfo"),
                     read_text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"));
  return info;
}

DevicePeak cpu_peak(const CpuInfo& cpu, int threads, bool bf16_on_amx) {
  const int cores = cpu.cores > 0 ? std::clamp(threads, 1, cpu.cores) : std::max(threads, 1);
  DevicePeak p;
  p.name = "CPU: " + (cpu.model.empty() ? std::string("unknown model") : cpu.model);
  p.f32 = figure(cpu, cores, f32_unit(cpu));
  p.tf32 = p.f32;
  p.f16 = p.f32;
  p.bf16 = figure(cpu, cores, bf16_unit(cpu, bf16_on_amx));
  return p;
}

}  // namespace tessera
