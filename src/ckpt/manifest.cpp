#include "ckpt/manifest.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace tessera::ckpt {
namespace {

using json = nlohmann::json;

constexpr int kMaxDepth = 16;            // our files nest 3 deep
constexpr size_t kMaxEntries = 1 << 16;  // files in a manifest, shards in a trainer state

// Parses JSON text after bounding its size and bracket depth (the depth scan also keeps a
// hostile file from exhausting the stack of anything that walks the tree recursively).
json parse_bounded(std::string_view text, const std::string& path) {
  TS_CHECK(text.size() <= kMaxJsonBytes, "checkpoint file '{}': {} bytes, expected at most {}",
           path, text.size(), kMaxJsonBytes);
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '{' || c == '[') {
      TS_CHECK(++depth <= kMaxDepth, "checkpoint file '{}': JSON nested deeper than {} levels",
               path, kMaxDepth);
    }
    if (c == '}' || c == ']') --depth;
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail("checkpoint file '{}': not valid JSON: {}", path, e.what());
  }
}

// Typed access to the fields of one JSON object; errors say "'<file>': field '<path>' ...".
class Fields {
 public:
  Fields(const json& obj, const std::string& file, std::string prefix)
      : obj_(obj), file_(file), prefix_(std::move(prefix)) {
    TS_CHECK(obj_.is_object(), "checkpoint file '{}': {} is a JSON {}, expected an object", file_,
             prefix_.empty() ? std::string("the document") : "field '" + prefix_ + "'",
             obj_.type_name());
  }

  std::string name(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }
  const json& get(std::string_view key) const {
    auto it = obj_.find(key);
    TS_CHECK(it != obj_.end(), "checkpoint file '{}': field '{}' is missing", file_, name(key));
    return *it;
  }
  bool has(std::string_view key) const { return obj_.contains(key); }

  uint64_t u64(std::string_view key, uint64_t max = std::numeric_limits<uint64_t>::max()) const {
    const json& v = get(key);
    TS_CHECK(v.is_number_unsigned() && v.get<uint64_t>() <= max,
             "checkpoint file '{}': field '{}' is {}, expected an integer in [0, {}]", file_,
             name(key), v.dump(), max);
    return v.get<uint64_t>();
  }
  int64_t count(std::string_view key, int64_t max = std::numeric_limits<int64_t>::max()) const {
    return int64_t(u64(key, uint64_t(max)));
  }
  double finite(std::string_view key) const {
    const json& v = get(key);
    TS_CHECK(v.is_number() && std::isfinite(v.get<double>()),
             "checkpoint file '{}': field '{}' is {}, expected a finite number", file_, name(key),
             v.dump());
    return v.get<double>();
  }
  std::string string(std::string_view key) const {
    const json& v = get(key);
    TS_CHECK(v.is_string() && v.get_ref<const std::string&>().size() <= 255,
             "checkpoint file '{}': field '{}' is {}, expected a string of at most 255 bytes",
             file_, name(key), v.dump().substr(0, 80));
    return v.get<std::string>();
  }
  std::string file_name(std::string_view key) const {
    std::string s = string(key);
    TS_CHECK(is_safe_file_name(s),
             "checkpoint file '{}': field '{}' is \"{}\", expected a plain file name", file_,
             name(key), s);
    return s;
  }
  StreamState stream(std::string_view key) const {
    Fields f(get(key), file_, name(key));
    return {f.u64("seed"), f.u64("offset")};
  }

 private:
  const json& obj_;
  const std::string& file_;
  std::string prefix_;
};

void check_header(const Fields& f, const std::string& path) {
  const std::string format = f.string("format");
  TS_CHECK(format == kFormat, "checkpoint file '{}': field 'format' is \"{}\", expected \"{}\"",
           path, format, kFormat);
  const int64_t version = f.count("version");
  TS_CHECK(version == kFormatVersion,
           "checkpoint file '{}': format version {} is not supported (this build reads {})", path,
           version, kFormatVersion);
}

json stream_json(const StreamState& s) {
  return {{"seed", s.seed}, {"offset", s.offset}};
}

std::string crc_hex(uint32_t crc) {
  return fmt::format("{:08x}", crc);
}

uint32_t parse_crc_hex(const std::string& s, const std::string& path, const std::string& field) {
  uint32_t v = 0;
  bool ok = s.size() == 8;
  for (char c : s) {
    if (!ok) break;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    ok = d >= 0;
    v = v << 4 | uint32_t(d & 15);
  }
  TS_CHECK(ok, "checkpoint file '{}': field '{}' is \"{}\", expected 8 lowercase hex digits", path,
           field, s.substr(0, 40));
  return v;
}

}  // namespace

bool is_safe_file_name(std::string_view name) {
  if (name.empty() || name.size() > 255 || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

const FileEntry* Manifest::find(std::string_view name) const {
  for (const FileEntry& f : files)
    if (f.name == name) return &f;
  return nullptr;
}

std::string manifest_to_json(const Manifest& m) {
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  for (const FileEntry& f : m.files)
    files[f.name] = {{"bytes", f.bytes}, {"crc32", crc_hex(f.crc32)}};
  nlohmann::ordered_json j = {{"format", kFormat},
                              {"version", kFormatVersion},
                              {"step", m.step},
                              {"world_size", m.world_size},
                              {"files", std::move(files)}};
  return j.dump(2) + "\n";
}

Manifest parse_manifest(std::string_view text, const std::string& path) {
  const json doc = parse_bounded(text, path);
  Fields f(doc, path, "");
  check_header(f, path);
  Manifest m;
  m.step = f.count("step");
  m.world_size = int(f.count("world_size", 1 << 20));
  TS_CHECK(m.world_size >= 1, "checkpoint file '{}': field 'world_size' is 0, expected >= 1", path);
  const json& fj = f.get("files");
  TS_CHECK(fj.is_object(), "checkpoint file '{}': field 'files' is a JSON {}, expected an object",
           path, fj.type_name());
  TS_CHECK(fj.size() <= kMaxEntries,
           "checkpoint file '{}': field 'files' lists {} files, more than {}", path, fj.size(),
           kMaxEntries);
  for (const auto& [name, v] : fj.items()) {
    const std::string field = "files." + name;
    TS_CHECK(is_safe_file_name(name) && name != kManifestName,
             "checkpoint file '{}': field 'files' lists \"{}\", expected a plain file name other "
             "than {}",
             path, name.substr(0, 80), kManifestName);
    Fields e(v, path, field);
    FileEntry entry;
    entry.name = name;
    entry.bytes = e.u64("bytes");
    entry.crc32 = parse_crc_hex(e.string("crc32"), path, field + ".crc32");
    m.files.push_back(std::move(entry));
  }
  // JSON objects are sorted by key (nlohmann::json), and duplicate keys keep one value.
  std::sort(m.files.begin(), m.files.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.name < b.name; });
  return m;
}

std::string trainer_state_to_json(const TrainerState& s) {
  nlohmann::ordered_json rngs = nlohmann::ordered_json::object();
  for (const auto& [name, st] : s.rngs) rngs[name] = stream_json(st);
  nlohmann::ordered_json shards = nlohmann::ordered_json::array();
  for (const OptimizerShard& sh : s.optimizer_shards)
    shards.push_back({{"file", sh.file}, {"begin", sh.begin}, {"end", sh.end}});
  nlohmann::ordered_json j = {
      {"format", kFormat},
      {"version", kFormatVersion},
      {"step", s.step},
      {"world_size", s.world_size},
      {"zero_stage", s.zero_stage},
      {"data", stream_json(s.data)},
      {"rngs", std::move(rngs)},
      {"loss_scale",
       {{"scale", s.loss_scale},
        {"clean_steps", s.loss_scale_clean_steps},
        {"skipped_steps", s.loss_scale_skipped_steps}}},
      {"bad_steps", {{"total", s.bad_steps_total}, {"in_a_row", s.bad_steps_in_a_row}}},
      {"last_lr", s.last_lr},
      {"optimizer",
       {{"name", s.optimizer},
        {"steps", s.optimizer_steps},
        {"flat_numel", s.flat_numel},
        {"shards", std::move(shards)}}},
  };
  if (s.samples_digest) j["samples_digest"] = *s.samples_digest;
  return j.dump(2) + "\n";
}

TrainerState parse_trainer_state(std::string_view text, const std::string& path) {
  const json doc = parse_bounded(text, path);
  Fields f(doc, path, "");
  check_header(f, path);
  TrainerState s;
  s.step = f.count("step");
  s.world_size = int(f.count("world_size", 1 << 20));
  TS_CHECK(s.world_size >= 1, "checkpoint file '{}': field 'world_size' is 0, expected >= 1", path);
  s.zero_stage = int(f.count("zero_stage", 3));
  s.data = f.stream("data");
  const json& rj = f.get("rngs");
  Fields rngs(rj, path, "rngs");
  TS_CHECK(rj.size() <= 64, "checkpoint file '{}': field 'rngs' has {} entries, more than 64", path,
           rj.size());
  for (const auto& [name, v] : rj.items()) {
    TS_CHECK(name.size() <= 64, "checkpoint file '{}': field 'rngs' has a name of {} bytes", path,
             name.size());
    s.rngs[name] = rngs.stream(name);
  }
  Fields ls(f.get("loss_scale"), path, "loss_scale");
  s.loss_scale = ls.finite("scale");
  TS_CHECK(s.loss_scale > 0, "checkpoint file '{}': field 'loss_scale.scale' is {}, expected > 0",
           path, s.loss_scale);
  s.loss_scale_clean_steps = ls.count("clean_steps");
  s.loss_scale_skipped_steps = ls.count("skipped_steps");
  Fields bad(f.get("bad_steps"), path, "bad_steps");
  s.bad_steps_total = bad.count("total");
  s.bad_steps_in_a_row = bad.count("in_a_row");
  TS_CHECK(s.bad_steps_in_a_row <= s.bad_steps_total && s.bad_steps_total <= s.step,
           "checkpoint file '{}': field 'bad_steps' has {} in a row of {} in total after {} "
           "steps, expected in_a_row <= total <= step",
           path, s.bad_steps_in_a_row, s.bad_steps_total, s.step);
  s.last_lr = f.finite("last_lr");
  if (f.has("samples_digest")) s.samples_digest = f.u64("samples_digest");
  Fields opt(f.get("optimizer"), path, "optimizer");
  s.optimizer = opt.string("name");
  TS_CHECK(s.optimizer == "adamw" || s.optimizer == "sgd",
           "checkpoint file '{}': field 'optimizer.name' is \"{}\", expected \"adamw\" or \"sgd\"",
           path, s.optimizer);
  s.optimizer_steps = opt.count("steps");
  TS_CHECK(s.optimizer_steps <= s.step,
           "checkpoint file '{}': field 'optimizer.steps' is {}, more than the {} steps taken",
           path, s.optimizer_steps, s.step);
  // A flat layout of more than 2^48 elements (1 PiB of f32) is not a real model.
  s.flat_numel = opt.count("flat_numel", int64_t(1) << 48);
  const json& sj = opt.get("shards");
  TS_CHECK(sj.is_array() && !sj.empty() && sj.size() <= kMaxEntries,
           "checkpoint file '{}': field 'optimizer.shards' is a JSON {} of {} entries, expected an "
           "array of 1 to {}",
           path, sj.type_name(), sj.size(), kMaxEntries);
  int64_t covered = 0;
  for (size_t i = 0; i < sj.size(); ++i) {
    Fields sh(sj[i], path, fmt::format("optimizer.shards[{}]", i));
    OptimizerShard o{sh.file_name("file"), sh.count("begin"), sh.count("end")};
    TS_CHECK(o.begin == covered && o.begin <= o.end && o.end <= s.flat_numel,
             "checkpoint file '{}': field 'optimizer.shards[{}]' covers [{}, {}), expected it to "
             "start at {} and end by flat_numel = {} (shards tile the flat layout in order)",
             path, i, o.begin, o.end, covered, s.flat_numel);
    covered = o.end;
    s.optimizer_shards.push_back(std::move(o));
  }
  TS_CHECK(covered == s.flat_numel,
           "checkpoint file '{}': field 'optimizer.shards' covers [0, {}), expected [0, {})", path,
           covered, s.flat_numel);
  return s;
}

}  // namespace tessera::ckpt
