// `tessera plan --search`: the layouts of one config on a cluster (tensor, pipeline and context
// ranks, ZeRO stage, micro-batches, recomputation, sequence parallelism), each planned by
// make_plan, ranked by predicted tokens/s among those that fit. Pruned to stay fast: for each
// (tp, pp, cp, ZeRO) the micro-batch counts are tried from the smallest upwards, recomputation off
// then on, and the first that fits is kept.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/cluster.h"
#include "plan/planner.h"
#include "train/config.h"

namespace tessera::plan {

struct Candidate {
  // The layout keys as `key=value` overrides of the searched config (paste them after it).
  std::vector<std::string> overrides;
  train::Config config;  // the searched config with the overrides applied
  Plan plan;
  bool as_given = false;  // the config's own layout
};

struct SearchResult {
  std::string cluster;  // as Plan::cluster
  int world = 0;
  int tried = 0;        // layouts considered (planned or refused)
  int refused = 0;      // refused by the config rules or the trainer (a tessera::Error)
  int did_not_fit = 0;  // planned, over the device's memory
  int fit = 0;
  std::vector<Candidate> best;  // those that fit, fastest first (ties: less memory), at most top
};

struct SearchOptions {
  int top = 10;
};

// Searches the layouts of `cfg` on `world` ranks of `cluster` (0: all its devices). The config's
// own layout is planned too and ranked with the others when it fits.
SearchResult search_layouts(const train::Config& cfg, const ClusterSpec& cluster, int world = 0,
                            const SearchOptions& opt = {});

// The overrides that turn `base` into `c` on the layout keys the search varies.
std::vector<std::string> layout_overrides(const train::Config& base, const train::Config& c);

// The table `tessera plan --search` prints, and its --json form.
std::string format_search(const SearchResult& r);
nlohmann::json search_json(const SearchResult& r);

}  // namespace tessera::plan
