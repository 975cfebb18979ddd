// What a run reports: one JSON object per logged step in RUN_DIR/metrics.jsonl, and a live
// progress line on the terminal.
#pragma once
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace tessera::train {

// Appends JSON lines, flushed after each so a killed run keeps what it logged.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
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
