// Reading a config: TOML file -> typed, range-checked assignments; command-line overrides ->
// more assignments; then defaults, the model preset, the assignments in order, and the rules that
// join several keys.
#include "train/config.h"

#include "train/model_kinds.h"

#include <fmt/format.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "train/config_toml_guard.h"

namespace tessera::train {
namespace {

// One key set by the file or an override, already type- and range-checked.
struct Assignment {
  const ConfigKey* key;
  ConfigValue value;
};

// ---- Suggestions for mistyped names ----

size_t levenshtein(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

std::string_view leaf(std::string_view name) {
  size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

std::string_view section_of(std::string_view name) {
  return name.substr(0, name.find('.'));
}

// The valid key or section nearest to a mistyped name. A right field in the wrong (or no)
// section ("steps", "model.steps") scores by its last part plus a small penalty, so it still
// finds "train.steps" although the full names are far apart.
std::string nearest_name(std::string_view given) {
  std::vector<std::string_view> candidates;
  for (const ConfigKey& key : config_keys()) {
    candidates.push_back(key.name);
    if (std::find(candidates.begin(), candidates.end(), section_of(key.name)) == candidates.end())
      candidates.push_back(section_of(key.name));
  }
  std::string_view best;
  size_t best_score = SIZE_MAX;
  for (std::string_view c : candidates) {
    size_t score = std::min(levenshtein(given, c), levenshtein(leaf(given), leaf(c)) + 2);
    if (score < best_score) best = c, best_score = score;
  }
  return std::string(best);
}

[[noreturn]] void fail_unknown_key(std::string_view where, std::string_view name) {
  fail("{}: unknown key '{}' (did you mean '{}'?)", where, name, nearest_name(name));
}

// ---- Values ----

std::string_view article(KeyType type) {
  return type == KeyType::Int ? "an" : "a";
}

std::string show_value(const ConfigValue& v) {
  if (auto* s = std::get_if<std::string>(&v)) return fmt::format("'{}'", *s);
  if (auto* i = std::get_if<int64_t>(&v)) return fmt::format("{}", *i);
  return fmt::format("{}", std::get<double>(v));
}

double as_number(const ConfigValue& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return std::get<double>(v);
}

bool in_range(double x, const ValueRange& r) {
  bool lo_ok = r.lo_open ? x > r.lo : x >= r.lo;
  bool hi_ok = r.hi_open ? x < r.hi : x <= r.hi;
  return lo_ok && hi_ok;  // false for NaN
}

// Throws when a typed value is outside the key's range or choices.
void check_value(const ConfigKey& key, const ConfigValue& value, std::string_view where) {
  if (key.type == KeyType::String) {
    if (key.choices.empty()) return;
    const std::string& s = std::get<std::string>(value);
    if (std::find(key.choices.begin(), key.choices.end(), s) != key.choices.end()) return;
    std::string_view closest = key.choices.front();
    for (std::string_view c : key.choices)
      if (levenshtein(s, c) < levenshtein(s, closest)) closest = c;
    // Only suggest a choice that looks like a typo of the value, not any choice at all.
    std::string hint = levenshtein(s, closest) <= std::max<size_t>(1, s.size() / 2)
                           ? fmt::format(" (did you mean '{}'?)", closest)
                           : "";
    fail("{}: {} = {} is not valid: expected {}{}", where, key.name, show_value(value),
         describe_valid_values(key), hint);
  }
  TS_CHECK(in_range(as_number(value), key.range), "{}: {} = {} is out of range: expected {}", where,
           key.name, show_value(value), describe_valid_values(key));
}

// ---- From TOML ----

std::string location(std::string_view source, const toml::source_region& region) {
  return fmt::format("{}:{}:{}", source, region.begin.line, region.begin.column);
}

std::string describe_node(const toml::node& node) {
  std::ostringstream text;
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      text << "a string ";
      break;
    case toml::node_type::integer:
      text << "an integer ";
      break;
    case toml::node_type::floating_point:
      text << "a float ";
      break;
    case toml::node_type::boolean:
      text << "a boolean ";
      break;
    default:
      text << "a date/time ";
      break;
  }
  node.visit([&](const auto& value) {
    if constexpr (toml::is_value<decltype(value)>) text << value;
  });
  return text.str();
}

ConfigValue value_from_node(const ConfigKey& key, const toml::node& node, std::string_view where) {
  switch (key.type) {
    case KeyType::Int:
      if (auto* i = node.as_integer()) return i->get();
      break;
    case KeyType::Float:
      if (auto* f = node.as_floating_point()) return f->get();
      if (auto* i = node.as_integer()) return static_cast<double>(i->get());  // lr = 1 is fine
      break;
    case KeyType::String:
      if (auto* s = node.as_string()) return s->get();
      break;
  }
  fail("{}: {} is {}: expected {} {}", where, key.name, describe_node(node), article(key.type),
       key_type_name(key.type));
}

bool is_section(std::string_view name) {
  for (const ConfigKey& key : config_keys())
    if (key.name.size() > name.size() && key.name.starts_with(name) && key.name[name.size()] == '.')
      return true;
  return false;
}

// Flattens a TOML table into assignments: known keys become values, known sections are entered,
// anything else is an unknown key.
void collect(const toml::table& table, const std::string& prefix, std::string_view source,
             std::vector<Assignment>& out) {
  for (auto&& [k, node] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const ConfigKey* key = find_config_key(name)) {
      std::string where = location(source, node.source());
      ConfigValue value = value_from_node(*key, node, where);
      check_value(*key, value, where);
      out.push_back({key, std::move(value)});
    } else if (node.is_table() && is_section(name)) {
      collect(*node.as_table(), name, source, out);
    } else {
      fail_unknown_key(location(source, k.source()), name);
    }
  }
}

std::vector<Assignment> assignments_from_toml(std::string_view text, std::string_view source) {
  check_toml_text_for_parser(text, source);  // toml++ 3.3.0 bug guard (train/config_toml_guard.h)
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    fail("{}: TOML syntax error: {}", location(source, e.source()), e.description());
  }
  std::vector<Assignment> out;
  collect(table, "", source, out);
  return out;
}

// ---- From the command line ----

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::optional<ConfigValue> parse_text_value(KeyType type, std::string_view text) {
  if (type == KeyType::String) {
    // Quotes the shell left in place are not part of the value.
    if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') &&
        text.back() == text.front())
      text = text.substr(1, text.size() - 2);
    return std::string(text);
  }
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  const char* end = text.data() + text.size();
  if (type == KeyType::Int) {
    int64_t i = 0;
    auto [ptr, ec] = std::from_chars(text.data(), end, i);
    if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
    return i;
  }
  double d = 0;
  auto [ptr, ec] = std::from_chars(text.data(), end, d);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(d)) return std::nullopt;
  return d;
}

constexpr std::string_view kCommandLine = "command line";

Assignment assignment_from_override(std::string_view text) {
  size_t eq = text.find('=');
  TS_CHECK(eq != std::string_view::npos, "{}: override '{}' is not of the form key=value",
           kCommandLine, text);
  std::string name(trim(text.substr(0, eq)));
  std::string_view raw = trim(text.substr(eq + 1));
  const ConfigKey* key = find_config_key(name);
  if (!key) fail_unknown_key(kCommandLine, name);
  std::optional<ConfigValue> value = parse_text_value(key->type, raw);
  TS_CHECK(value.has_value(), "{}: {} = '{}' is not {} {}", kCommandLine, key->name, raw,
           article(key->type), key_type_name(key->type));
  check_value(*key, *value, kCommandLine);
  return {key, std::move(*value)};
}

// ---- Resolution ----

void apply_preset(Config& c, std::string_view name) {
  if (name.empty()) return;
  const ModelPreset* p = find_model_preset(name);
  TS_ASSERT(p);  // preset names were checked against the choices already
  c.model.n_layer = p->n_layer;
  c.model.n_head = p->n_head;
  c.model.n_kv_head = p->n_kv_head;
  c.model.n_embd = p->n_embd;
  c.model.ffn_hidden = p->ffn_hidden;
  c.model.context = p->context;
  c.model.vocab_size = p->vocab_size;
  c.model.rope_theta = p->rope_theta;
  c.model.rope_scaling = p->rope_scaling;
  if (!p->head.empty()) c.model.head = std::string(p->head);
}

Config resolve(const std::vector<Assignment>& assignments, std::string_view source) {
  Config c;
  std::string preset = c.model.preset;
  for (const Assignment& a : assignments)
    if (a.key->name == "model.preset") preset = std::get<std::string>(a.value);
  // The preset first, so that explicit keys, wherever they come from, override its values.
  apply_preset(c, preset);
  for (const Assignment& a : assignments) a.key->set(c, a.value);
  validate(c, source);
  return c;
}

// ---- Rules joining several keys ----

using Violation = std::optional<std::string>;

bool language_model(const Config& c) {
  return model_kind(c.model.kind).language_model;
}

struct Rule {
  std::string_view text;
  Violation (*check)(const Config&);
};

const Rule kRules[] = {
    {"`train.batch_size` is divisible by `train.micro_batches`.",
     [](const Config& c) -> Violation {
       if (c.train.batch_size % c.train.micro_batches == 0) return {};
       return fmt::format("train.batch_size = {} is not divisible by train.micro_batches = {}",
                          c.train.batch_size, c.train.micro_batches);
     }},
    {"Language models: `train.seq_len` <= `model.context` (after the preset is applied).",
     [](const Config& c) -> Violation {
       if (!language_model(c) || c.train.seq_len <= c.model.context) return {};
       return fmt::format("train.seq_len = {} exceeds model.context = {}", c.train.seq_len,
                          c.model.context);
     }},
    {"Language models: `model.n_embd` is divisible by `model.n_head`, and `model.n_head` by "
     "`model.n_kv_head` when set.",
     [](const Config& c) -> Violation {
       if (!language_model(c)) return {};
       if (c.model.n_embd % c.model.n_head != 0)
         return fmt::format("model.n_embd = {} is not divisible by model.n_head = {}",
                            c.model.n_embd, c.model.n_head);
       if (c.model.n_kv_head > 0 && c.model.n_head % c.model.n_kv_head != 0)
         return fmt::format("model.n_head = {} is not divisible by model.n_kv_head = {}",
                            c.model.n_head, c.model.n_kv_head);
       return {};
     }},
    {"Language models (`gpt`, `llama`): `data.kind` is \"text\", \"shards\" or \"random\"; "
     "image classifiers (`mlp`, `cnn`): `data.kind` is \"fashion-mnist\".",
     [](const Config& c) -> Violation {
       bool tokens = c.data.kind == "text" || c.data.kind == "shards" || c.data.kind == "random";
       if (language_model(c) == tokens) return {};
       return fmt::format("model.kind = '{}' cannot train on data.kind = '{}'", c.model.kind,
                          c.data.kind);
     }},
    {"Byte-level text (`data.kind` = \"text\"): `model.vocab_size` >= 256.",
     [](const Config& c) -> Violation {
       if (c.data.kind != "text" || c.model.vocab_size >= 256) return {};
       return fmt::format("model.vocab_size = {} is too small for byte-level text: expected >= 256",
                          c.model.vocab_size);
     }},
    {"`model.preset` is a size of `model.kind`.",
     [](const Config& c) -> Violation {
       const ModelKind* kind = nullptr;
       if (c.model.preset.empty() || !find_model_preset(c.model.preset, &kind) ||
           kind->name == c.model.kind)
         return {};
       return fmt::format("model.preset = '{}' is a {} preset but model.kind = '{}'",
                          c.model.preset, kind->name, c.model.kind);
     }},
    {"`model.recompute` is \"none\" unless the model is a language model.",
     [](const Config& c) -> Violation {
       if (c.model.recompute == "none" || language_model(c)) return {};
       return fmt::format(
           "model.recompute = '{}' recomputes transformer blocks but model.kind = '{}' has none",
           c.model.recompute, c.model.kind);
     }},
    {"`model.n_kv_head`, `model.ffn_hidden`, `model.rope_theta`, `model.rope_scaling` keep their "
     "defaults and `model.head` is \"tied\" unless `model.kind` = \"llama\" (GPT-2's are fixed).",
     [](const Config& c) -> Violation {
       const ModelConfig& m = c.model;
       if (model_kind(m.kind).decoder_options) return {};
       for (auto [key, set] : {std::pair{"n_kv_head", m.n_kv_head != 0},
                               {"ffn_hidden", m.ffn_hidden != 0},
                               {"rope_theta", m.rope_theta != 0},
                               {"rope_scaling", m.rope_scaling != 0},
                               {"head", m.head != "tied"}})
         if (set)
           return fmt::format(
               "model.{} is set but model.kind = '{}' does not take it (only "
               "\"llama\" does)",
               key, m.kind);
       return {};
     }},
    {"`parallel.tp`, `parallel.pp` and `parallel.cp` > 1 only for language models; with "
     "`parallel.cp` > 1, `train.seq_len` is a multiple of 2 `parallel.cp` (each rank takes two "
     "chunks) and `parallel.sequence_parallel` is 0.",
     [](const Config& c) -> Violation {
       const ParallelConfig& p = c.parallel;
       if (!language_model(c))
         for (auto [key, n] : {std::pair{"tp", p.tp}, {"pp", p.pp}, {"cp", p.cp}})
           if (n > 1)
             return fmt::format(
                 "parallel.{} = {} splits transformer layers but model.kind = '{}' has none", key,
                 n, c.model.kind);
       if (p.cp == 1) return {};
       if (c.train.seq_len % (2 * p.cp) != 0)
         return fmt::format(
             "parallel.cp = {} cuts each sequence into {} chunks, but train.seq_len = {} is not "
             "a multiple of {}",
             p.cp, 2 * p.cp, c.train.seq_len, 2 * p.cp);
       if (p.sequence_parallel != 0)
         return fmt::format(
             "parallel.cp = {} with parallel.sequence_parallel = 1: the two do not combine yet",
             p.cp);
       return {};
     }},
    {"Pipeline parallelism (`parallel.pp` > 1): `parallel.zero_stage` <= 2, and 0 with a tied "
     "head (GPT-2); `parallel.pp_virtual_stages` > 1 only with "
     "\"interleaved_1f1b\", which needs `train.micro_batches` a multiple of `parallel.pp`.",
     [](const Config& c) -> Violation {
       const ParallelConfig& p = c.parallel;
       const bool interleaved = p.pp_schedule == "interleaved_1f1b";
       if (p.pp_virtual_stages > 1 && !interleaved)
         return fmt::format(
             "parallel.pp_virtual_stages = {} needs parallel.pp_schedule = \"interleaved_1f1b\" "
             "(it is \"{}\")",
             p.pp_virtual_stages, p.pp_schedule);
       if (p.pp == 1) return {};
       if (p.zero_stage == 3)
         return fmt::format(
             "parallel.pp = {} with parallel.zero_stage = 3: ZeRO-3 does not "
             "combine with pipeline parallelism yet (use 0, 1 or 2)",
             p.pp);
       if (p.zero_stage > 0 && c.model.head == "tied")
         return fmt::format(
             "parallel.pp = {} with parallel.zero_stage = {} and a tied head: the first and last "
             "stages' copies of the embedding sum their gradients on whole buffers (use "
             "parallel.zero_stage = 0, or model.head = \"untied\")",
             p.pp, p.zero_stage);
       if (interleaved && c.train.micro_batches % p.pp != 0)
         return fmt::format(
             "parallel.pp_schedule = \"interleaved_1f1b\" needs train.micro_batches = {} to be "
             "a multiple of parallel.pp = {}",
             c.train.micro_batches, p.pp);
       return {};
     }},
    {"`optim.min_lr` <= `optim.lr`.",
     [](const Config& c) -> Violation {
       if (c.optim.min_lr <= c.optim.lr) return {};
       return fmt::format("optim.min_lr = {} exceeds optim.lr = {}", c.optim.min_lr, c.optim.lr);
     }},
    {"`optim.warmup_steps` < `train.steps` when `optim.schedule` = \"cosine\".",
     [](const Config& c) -> Violation {
       if (c.optim.schedule != "cosine" || c.optim.warmup_steps < c.train.steps) return {};
       return fmt::format(
           "optim.warmup_steps = {} leaves no steps to decay over: expected fewer than "
           "train.steps = {} with optim.schedule = \"cosine\"",
           c.optim.warmup_steps, c.train.steps);
     }},
};

}  // namespace

std::string describe_valid_values(const ConfigKey& key) {
  if (key.type == KeyType::String) {
    if (key.choices.empty()) return "any string";
    std::string out = "one of ";
    for (size_t i = 0; i < key.choices.size(); ++i)
      out += fmt::format("{}\"{}\"", i ? ", " : "", key.choices[i]);
    return out;
  }
  const ValueRange& r = key.range;
  bool has_lo = std::isfinite(r.lo), has_hi = std::isfinite(r.hi);
  if (has_lo && has_hi)
    return fmt::format("{}{}, {}{}", r.lo_open ? '(' : '[', r.lo, r.hi, r.hi_open ? ')' : ']');
  if (has_lo) return fmt::format("{} {}", r.lo_open ? ">" : ">=", r.lo);
  if (has_hi) return fmt::format("{} {}", r.hi_open ? "<" : "<=", r.hi);
  return "any";
}

std::span<const std::string_view> config_rules() {
  static const std::vector<std::string_view> texts = [] {
    std::vector<std::string_view> out;
    for (const Rule& rule : kRules) out.push_back(rule.text);
    return out;
  }();
  return texts;
}

void validate(const Config& config, std::string_view source) {
  for (const ConfigKey& key : config_keys()) check_value(key, key.get(config), source);
  for (const Rule& rule : kRules)
    if (Violation v = rule.check(config)) fail("{}: {}", source, *v);
}

Config parse_config(std::string_view toml_text, std::string_view source,
                    std::span<const std::string> overrides) {
  std::vector<Assignment> assignments = assignments_from_toml(toml_text, source);
  for (const std::string& o : overrides) assignments.push_back(assignment_from_override(o));
  std::string where = overrides.empty() ? std::string(source)
                                        : fmt::format("{} (with command-line overrides)", source);
  return resolve(assignments, where);
}

Config load_config(const std::filesystem::path& path, std::span<const std::string> overrides) {
  std::error_code ec;
  TS_CHECK(std::filesystem::exists(path, ec), "config file '{}' does not exist", path.string());
  TS_CHECK(std::filesystem::is_regular_file(path, ec), "config file '{}' is not a regular file",
           path.string());
  std::ifstream in(path, std::ios::binary);
  TS_CHECK(in.good(), "config file '{}' cannot be opened", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path.string(), overrides);
}

}  // namespace tessera::train
