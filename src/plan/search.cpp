#include "plan/search.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

#include <fmt/format.h>

#include "core/error.h"
#include "train/model_kinds.h"

namespace tessera::plan {
namespace {

// The keys a layout sets, in the order the overrides are written.
constexpr std::string_view kLayoutKeys[] = {
    "parallel.tp",          "parallel.pp",
    "parallel.pp_schedule", "parallel.pp_virtual_stages",
    "parallel.cp",          "parallel.sequence_parallel",
    "parallel.zero_stage",  "train.micro_batches",
    "model.recompute",
};

// What the search ranks by: tokens/s for language models, steps/s for the others.
double speed(const Plan& p) {
  if (p.tokens_per_step > 0) return p.tokens_per_s;
  return p.timeline.step_seconds > 0 ? 1 / p.timeline.step_seconds : 0;
}

bool faster(const Candidate& a, const Candidate& b) {
  const double sa = speed(a.plan), sb = speed(b.plan);
  if (std::abs(sa - sb) > 1e-9 * std::max(sa, sb)) return sa > sb;
  return a.plan.max_required() < b.plan.max_required();
}

double gib(double b) {
  return b / double(1 << 30);
}

std::string compact_layout(const train::Config& c, int world) {
  const auto& p = c.parallel;
  const int64_t dp = world / std::max<int64_t>(1, p.tp * p.pp * p.cp);
  std::string s = fmt::format("tp {} pp {} cp {} dp {}, ZeRO-{}, {} mb", p.tp, p.pp, p.cp, dp,
                              p.zero_stage, c.train.micro_batches);
  if (c.model.recompute != "none") s += ", recompute";
  if (p.sequence_parallel) s += ", sp";
  return s;
}

}  // namespace

std::vector<std::string> layout_overrides(const train::Config& base, const train::Config& c) {
  std::vector<std::string> out;
  for (std::string_view name : kLayoutKeys) {
    const train::ConfigKey* key = train::find_config_key(name);
    TS_CHECK(key != nullptr, "plan search: unknown config key {}", name);
    const train::ConfigValue v = key->get(c);
    if (v != key->get(base)) out.push_back(fmt::format("{}={}", name, train::config_value_text(v)));
  }
  return out;
}

SearchResult search_layouts(const train::Config& cfg, const ClusterSpec& cluster, int world,
                            const SearchOptions& opt) {
  if (world <= 0) world = cluster.gpus();
  SearchResult r;
  r.world = world;
  std::vector<Candidate> fitting;
  // Plans c; nullopt when the config rules or the trainer refuse it. Counts the outcome.
  auto evaluate = [&](const train::Config& c) -> std::optional<Plan> {
    ++r.tried;
    std::optional<Plan> p = plan_if_valid(c, cluster, world);
    if (!p) {
      ++r.refused;
      return p;
    }
    if (r.cluster.empty()) r.cluster = p->cluster;
    if (!p->fits()) {
      ++r.did_not_fit;
      return p;
    }
    ++r.fit;
    fitting.push_back(Candidate{layout_overrides(cfg, c), c, *p, c == cfg});
    return p;
  };
  // The config's own layout first: the others are measured against it.
  const std::optional<Plan> own = evaluate(cfg);

  const train::ModelConfig& m = cfg.model;
  const bool layers = train::model_kind(m.kind).language_model;
  const int64_t kv_heads = m.n_kv_head > 0 ? m.n_kv_head : m.n_head;
  const int64_t batch = cfg.train.batch_size;
  for (int64_t tp : {1, 2, 4, 8}) {
    if (tp > 1 &&
        (!layers || tp > cluster.gpus_per_node || m.n_head % tp != 0 || kv_heads % tp != 0))
      continue;
    for (int64_t pp = 1; pp <= 16; ++pp) {
      if (pp > 1 && (!layers || m.n_layer % pp != 0)) continue;
      for (int64_t cp : {1, 2, 4}) {
        if (cp > 1 && (!layers || cfg.train.seq_len < 8192 || cfg.train.seq_len % (2 * cp) != 0))
          continue;
        if (world % (tp * pp * cp) != 0) continue;
        const int64_t dp = world / (tp * pp * cp);
        // Micro-batch counts the batch splits into over dp; with a pipeline, at least one per
        // stage when the batch allows it (fewer leave most of the step a bubble).
        std::vector<int64_t> micros;
        for (int64_t mb = 1; mb <= batch; mb *= 2)
          if (batch % (dp * mb) == 0) micros.push_back(mb);
        if (pp > 1 && !micros.empty() && micros.back() >= pp)
          std::erase_if(micros, [&](int64_t mb) { return mb < pp; });
        // Plans ZeRO stage `zero` at the points [from, to) of the order (micro-batch counts from
        // the fewest, recomputation off then on) until one fits; returns it, or SIZE_MAX.
        auto first_fit = [&](int64_t zero, size_t from, size_t to) {
          for (size_t k = from; k < std::min(to, 2 * micros.size()); ++k) {
            const size_t i = k / 2;
            train::Config c = cfg;
            c.parallel.tp = tp;
            c.parallel.pp = pp;
            c.parallel.cp = cp;
            c.parallel.zero_stage = zero;
            c.parallel.sequence_parallel = tp > 1 && cp == 1 ? 1 : 0;
            if (pp > 1) {
              c.parallel.pp_schedule = "1f1b";
              c.parallel.pp_virtual_stages = 1;
            }
            c.train.micro_batches = micros[i];
            c.model.recompute = k % 2 == 0 ? "none" : "blocks";
            const std::optional<Plan> p = c == cfg ? own : evaluate(c);
            if (p && p->fits()) {
              // A pipeline's bubble shrinks with more micro-batches: try one more doubling.
              if (pp > 1 && i + 1 < micros.size()) {
                c.train.micro_batches = micros[i + 1];
                if (!(c == cfg)) evaluate(c);
              }
              return k;
            }
          }
          return SIZE_MAX;
        };
        std::vector<int64_t> zeros;
        for (int64_t zero = 0; zero <= 3; ++zero)
          if (!(zero > 0 && dp == 1) && !(pp > 1 && (zero == 3 || (zero > 0 && m.head == "tied"))))
            zeros.push_back(zero);
        // The most sharded stage first: where it does not fit, no other stage does.
        const size_t lowest = first_fit(zeros.back(), 0, SIZE_MAX);
        if (lowest == SIZE_MAX) continue;
        // Then from the least sharded up: a more sharded stage communicates more, so it is
        // planned only at points before the one where the stage below first fitted.
        size_t limit = SIZE_MAX;
        for (size_t z = 0; z + 1 < zeros.size() && lowest < limit; ++z)
          limit = std::min(limit, first_fit(zeros[z], lowest, limit));
      }
    }
  }
  std::stable_sort(fitting.begin(), fitting.end(), faster);
  if (int(fitting.size()) > opt.top) fitting.resize(size_t(std::max(0, opt.top)));
  r.best = std::move(fitting);
  return r;
}

std::string format_search(const SearchResult& r) {
  std::string s = fmt::format("search: {} ranks of {}\n", r.world, r.cluster);
  s += fmt::format(
      "  {} layouts tried: {} refused by the config rules or the trainer, {} do not fit, {} "
      "fit\n",
      r.tried, r.refused, r.did_not_fit, r.fit);
  if (r.best.empty()) return s + "  no layout fits: more ranks, or a smaller batch / seq_len\n";
  s += fmt::format("top {} by predicted tokens/s (times in seconds per step):\n", r.best.size());
  s += "   #   tokens/s    MFU     step s    compute   exp.comm     bubble  GiB per rank   "
       "layout\n";
  for (size_t i = 0; i < r.best.size(); ++i) {
    const Candidate& c = r.best[i];
    const Plan& p = c.plan;
    const Timeline& t = p.timeline;
    s += fmt::format(
        "  {:>2}  {:>9.4g} {:>5.1f}% {:>10.4g} {:>10.4g} {:>10.4g} {:>10.4g}  {:>6.2f}/{:<6.1f} "
        "{}{}\n",
        i + 1, p.tokens_per_s, 100 * p.mfu, t.step_seconds, t.compute_seconds,
        t.exposed_comm_seconds, t.bubble_seconds, gib(p.max_required()), gib(p.capacity),
        compact_layout(c.config, p.world), c.as_given ? " (as given)" : "");
    std::string keys;
    for (const std::string& o : c.overrides) keys += (keys.empty() ? "" : " ") + o;
    s += fmt::format("      {}\n", keys.empty() ? "(the config as given)" : keys);
  }
  return s;
}

nlohmann::json search_json(const SearchResult& r) {
  nlohmann::json j;
  j["cluster"] = r.cluster;
  j["world"] = r.world;
  j["tried"] = r.tried;
  j["refused"] = r.refused;
  j["did_not_fit"] = r.did_not_fit;
  j["fit"] = r.fit;
  j["candidates"] = nlohmann::json::array();
  for (const Candidate& c : r.best) {
    const Plan& p = c.plan;
    const Timeline& t = p.timeline;
    j["candidates"].push_back({{"overrides", c.overrides},
                               {"as_given", c.as_given},
                               {"layout", p.layout},
                               {"tokens_per_s", p.tokens_per_s},
                               {"mfu", p.mfu},
                               {"step_seconds", t.step_seconds},
                               {"compute_seconds", t.compute_seconds},
                               {"exposed_comm_seconds", t.exposed_comm_seconds},
                               {"bubble_seconds", t.bubble_seconds},
                               {"max_memory_bytes", p.max_required()},
                               {"device_memory_bytes", p.capacity}});
  }
  return j;
}

}  // namespace tessera::plan
