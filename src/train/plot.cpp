#include "train/plot.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace tessera::train {

namespace fs = std::filesystem;

std::string plot_run(const std::string& run_dir) {
  const fs::path dir(run_dir), metrics = dir / "metrics.jsonl";
  std::ifstream in(metrics);
  TS_CHECK(in.good(), "plot: cannot read '{}' (is '{}' a run folder?)", metrics.string(), run_dir);
  // Columns for gnuplot: step, loss / step, val_loss / step, test_accuracy.
  const fs::path train_dat = dir / "plot_train.dat", eval_dat = dir / "plot_eval.dat";
  std::ofstream tr(train_dat), ev(eval_dat);
  std::string line, eval_key;
  int64_t n = 0, lineno = 0;
  while (std::getline(in, line)) {
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
  tr.close(), ev.close();
  TS_CHECK(n > 0, "plot: '{}' holds no training loss", metrics.string());

  const fs::path png = dir / "loss.png", script = dir / "plot.gp";
  std::ofstream gp(script);
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
  gp.close();
  const std::string cmd = "gnuplot '" + script.string() + "' 2>&1";
  int rc = std::system(cmd.c_str());
  TS_CHECK(rc == 0 && fs::exists(png),
           "plot: gnuplot failed (exit {}) on '{}': is gnuplot-nox installed "
           "(scripts/install-deps.sh)?",
           rc, script.string());
  fs::remove(train_dat), fs::remove(eval_dat), fs::remove(script);
  return png.string();
}

}  // namespace tessera::train
