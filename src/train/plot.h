// Training curves as a PNG, drawn by gnuplot (Debian's gnuplot-nox) from metrics.jsonl.
#pragma once
#include <string>

namespace tessera::train {

// Reads RUN_DIR/metrics.jsonl and writes RUN_DIR/loss.png (training loss, and validation loss
// or test accuracy where logged). Returns the image's path. Throws Error when the metrics file
// is missing or malformed, or gnuplot is absent or fails.
std::string plot_run(const std::string& run_dir);

}  // namespace tessera::train
