#include "train/metrics.h"

#include <unistd.h>

#include <cmath>

#include "core/error.h"

namespace tessera::train {

MetricsWriter::MetricsWriter(const std::string& path) : path_(path), out_(path, std::ios::app) {
  TS_CHECK(out_.good(), "cannot open metrics file '{}' for writing", path);
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = int64_t(s + 0.5);
  int64_t h = t / 3600, m = t / 60 % 60, sec = t % 60;
  return h ? fmt::format("{}:{:02}:{:02}", h, m, sec) : fmt::format("{}:{:02}", m, sec);
}

std::string format_si(double v) {
  if (v >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}k", v / 1e3);
  return fmt::format("{:.1f}", v);
}

ProgressLine::ProgressLine(int64_t total, FILE* out)
    : total_(total),
      out_(out),
      tty_(isatty(fileno(out))),
      start_(std::chrono::steady_clock::now()) {}

double ProgressLine::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressLine::update(int64_t step, double loss, double lr, double rate, const char* unit,
                          double ms) {
  const double el = elapsed_s();
  const double eta = step > 0 ? el / double(step) * double(total_ - step) : NAN;
  std::string line = fmt::format(
      "step {}/{} | loss {:.4f} | lr {:.2e} | {} {} | {:.0f} ms/step | {} elapsed, ETA {}", step,
      total_, loss, lr, format_si(rate), unit, ms, format_duration(el), format_duration(eta));
  if (tty_) {
    fmt::print(out_, "\r\033[K{}", line);
    open_line_ = true;
  } else {
    fmt::print(out_, "{}\n", line);
  }
  std::fflush(out_);
}

void ProgressLine::message(const std::string& text) {
  if (open_line_) fmt::print(out_, "\n"), open_line_ = false;
  fmt::print(out_, "{}\n", text);
  std::fflush(out_);
}

void ProgressLine::finish() {
  if (open_line_) fmt::print(out_, "\n"), open_line_ = false;
  std::fflush(out_);
}

}  // namespace tessera::train
