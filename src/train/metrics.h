// What a run reports: one JSON object per logged step in RUN_DIR/metrics.jsonl, and a live
// progress line on the terminal.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/file_system.h"

namespace tessera::train {

// Appends JSON lines to a file through the file-system layer (core/file_system.h), each handed
// to the kernel as it is logged (a killed run keeps what it logged). sync() makes the lines so
// far durable: the trainer calls it at each checkpoint and at the end of the run, so a power cut
// loses only lines logged since (docs/CHECKPOINTS.md, "metrics.jsonl").
//
// A line is in the file whole or not at all, as far as this process can help it: when an append
// fails (a full disk), the bytes it did write are cut off again, the lines are kept in memory
// and the next write() or sync() retries them, in order. Failures warn (once until it works
// again, then once more to say so) and do not throw: like a checkpoint save on a full disk,
// losing metrics for a while must not stop the training. (A kill in the middle of an append
// can still leave a cut line at the end; a resumed run drops it: keep_metrics_up_to.)
class MetricsWriter {
 public:
  using Warn = std::function<void(const std::string&)>;
  // Opens (creates) `path` for appending; an Error naming it if that fails. `warn` gets the
  // warnings (default: stderr).
  explicit MetricsWriter(const std::string& path, Warn warn = nullptr);
  void write(const nlohmann::json& record);
  // Writes what is pending, then fsyncs the file (and, the first time, its folder).
  void sync();
  const std::string& path() const { return path_; }
  size_t pending_lines() const { return pending_.size(); }

  // Lines kept in memory while appends fail; beyond it the oldest are dropped (and counted).
  static constexpr size_t kMaxPendingLines = 100000;

 private:
  // false: an append failed (warned), the lines are still pending. `fresh`: how many of them
  // were added just now (not delayed).
  bool flush_pending(size_t fresh);
  bool cut_torn_tail();  // false: a failed append's bytes may still follow the whole lines

  std::string path_;
  Warn warn_;
  std::unique_ptr<WritableFile> file_;
  uint64_t whole_bytes_ = 0;  // the file's bytes up to the end of its last whole line
  bool torn_ = false;         // a failed append may have left bytes after whole_bytes_
  bool failing_ = false;      // since the last failure, nothing was written
  bool folder_synced_ = false;
  std::deque<std::string> pending_;  // lines not in the file yet, each ending in '\n'
  uint64_t dropped_ = 0;
};

// "step 120/2000 | loss 2.3456 | lr 1.00e-03 | 51.2k tok/s | 80 ms/step | 0:10 elapsed, ETA 2:40"
// Redrawn in place (carriage return) on a terminal; one line per call otherwise.
class ProgressLine {
 public:
  explicit ProgressLine(int64_t total_steps, FILE* out = stdout);
  // rate is tokens/s or samples/s, unit "tok/s" or "samples/s".
  void update(int64_t step, double loss, double lr, double rate, const char* unit, double ms);
  // Prints a full line (evaluation results, messages) without garbling the progress line.
  void message(const std::string& text);
  void finish();
  double elapsed_s() const;

 private:
  int64_t total_;
  FILE* out_;
  bool tty_;
  bool open_line_ = false;
  std::chrono::steady_clock::time_point start_;
};

// "1:02:03" / "2:03".
std::string format_duration(double seconds);
// 51234 -> "51.2k"
std::string format_si(double v);

}  // namespace tessera::train
