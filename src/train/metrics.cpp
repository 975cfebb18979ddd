#include "train/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/file_io.h"

namespace tessera::train {

MetricsWriter::MetricsWriter(const std::string& path, Warn warn)
    : path_(path), warn_(std::move(warn)) {
  if (!warn_) warn_ = [](const std::string& text) { fmt::print(stderr, "{}\n", text); };
  try {
    file_ = file_system().append_file(path_);
    whole_bytes_ = file_size(path_);
  } catch (const Error& e) {
    fail("cannot open metrics file '{}' for writing: {}", path_, e.what());
  }
}

void MetricsWriter::write(const nlohmann::json& record) {
  pending_.push_back(record.dump() + "\n");
  if (pending_.size() > kMaxPendingLines) pending_.pop_front(), ++dropped_;
  flush_pending(1);
}

bool MetricsWriter::cut_torn_tail() {
  if (!torn_) return true;
  try {
    file_->truncate(whole_bytes_);
    torn_ = false;
  } catch (const Error&) {  // the next write or sync tries again
  }
  return !torn_;
}

bool MetricsWriter::flush_pending(size_t fresh) {
  if (pending_.empty()) return true;
  std::string bytes;
  for (const std::string& line : pending_) bytes += line;
  try {
    if (!cut_torn_tail()) file_->truncate(whole_bytes_);  // throws the reason
    torn_ = true;  // until the append returns, part of it may be in the file
    file_->append(bytes.data(), bytes.size());
    torn_ = false;
  } catch (const Error& e) {
    cut_torn_tail();
    if (!failing_)
      warn_(fmt::format(
          "metrics: cannot append to '{}': {}; training continues, the lines are kept in memory "
          "and written when it works again",
          path_, e.what()));
    failing_ = true;
    return false;
  }
  whole_bytes_ += bytes.size();
  if (failing_)
    warn_(fmt::format("metrics: '{}' is writable again: {} delayed lines written{}", path_,
                      pending_.size() - std::min(fresh, pending_.size()),
                      dropped_ ? fmt::format(", {} older ones lost (more than {} waited)", dropped_,
                                             kMaxPendingLines)
                               : std::string()));
  pending_.clear();
  failing_ = false, dropped_ = 0;
  return true;
}

void MetricsWriter::sync() {
  // Only whole lines become durable: with a cut line still in the file, nothing is synced.
  if (!flush_pending(0) && !cut_torn_tail()) return;
  try {
    file_->sync();
    if (!folder_synced_) fsync_directory(parent_directory(path_));  // the file's own entry
    folder_synced_ = true;
  } catch (const Error& e) {
    warn_(
        fmt::format("metrics: cannot make '{}' durable: {}; training continues", path_, e.what()));
  }
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
