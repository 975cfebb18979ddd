#include "train/plot.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "core/file_system.h"

namespace tessera::train {

namespace fs = std::filesystem;

std::string plot_run(const std::string& run_dir) {
  const fs::path dir(run_dir), metrics = dir / "metrics.jsonl";
  TS_CHECK(file_system().type(metrics.string()) == FileType::file,
           "plot: cannot read '{}' (is '{}' a run folder?)", metrics.string(), run_dir);
  const std::string text = read_small_file(metrics.string(), UINT64_MAX);
  // Columns for gnuplot: step, loss / step, val_loss / step, test_accuracy.
  const fs::path train_dat = dir / "plot_train.dat", eval_dat = dir / "plot_eval.dat";
  std::ostringstream tr, ev;
  std::string eval_key;
  int64_t n = 0, lineno = 0;
  for (size_t from = 0; from < text.size();) {
    const size_t eol = std::min(text.find('\n', from), text.size());
    const std::string_view line(text.data() + from, eol - from);
    from = eol + 1;
    ++lineno;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    TS_CHECK(!j.is_discarded() && j.is_object() && j.contains("step"),
             "plot: '{}' line {} is not a metrics object with a 'step'", metrics.string(), lineno);
    if (j.contains("loss"))
      tr << j["step"].get<double>() << ' ' << j["loss"].get<double>() << '\n', ++n;
    for (const char* k : {"val_loss", "test_accuracy"})
      if (j.contains(k))
        eval_key = k, ev << j["step"].get<double>() << ' ' << j[k].get<double>() << '\n';
  }
  write_file_atomically(train_dat.string(), tr.str());
  write_file_atomically(eval_dat.string(), ev.str());
  TS_CHECK(n > 0, "plot: '{}' holds no training loss", metrics.string());

  const fs::path png = dir / "loss.png", script = dir / "plot.gp";
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,540 noenhanced\n"
     << "set output '" << png.string() << "'\n"
     << "set title 'Tessera run " << dir.filename().string() << "'\n"
     << "set xlabel 'step'\nset ylabel 'loss (nats)'\nset grid\nset key top right\n";
  if (eval_key == "test_accuracy") {
    gp << "set y2label 'test accuracy'\nset y2tics\nset ytics nomirror\n"
       << "plot '" << train_dat.string() << "' with lines title 'train loss', '"
       << eval_dat.string() << "' axes x1y2 with linespoints title 'test accuracy'\n";
  } else if (eval_key == "val_loss") {
    gp << "plot '" << train_dat.string() << "' with lines title 'train loss', '"
       << eval_dat.string() << "' with linespoints title 'validation loss'\n";
  } else {
    gp << "plot '" << train_dat.string() << "' with lines title 'train loss'\n";
  }
  write_file_atomically(script.string(), gp.str());
  const std::string cmd = "gnuplot '" + script.string() + "' 2>&1";
  int rc = std::system(cmd.c_str());
  TS_CHECK(rc == 0 && file_system().type(png.string()) == FileType::file,
           "plot: gnuplot failed (exit {}) on '{}': is gnuplot-nox installed "
           "(scripts/install-deps.sh)?",
           rc, script.string());
  for (const fs::path& p : {train_dat, eval_dat, script}) file_system().remove(p.string());
  return png.string();
}

}  // namespace tessera::train
