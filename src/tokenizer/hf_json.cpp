#include "tokenizer/hf_json.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.h"
#include "core/file_io.h"
#include "tokenizer/regex.h"

namespace tessera::tokenizer {

namespace {

using nlohmann::json;

// tokenizer.json files run to tens of megabytes (Llama 3's is 9 MB).
constexpr uint64_t kMaxFileBytes = uint64_t(1) << 30;

// Reads one tokenizer.json; every error names the file and the field.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  TokenizerSpec read(const json& root) {
    expect(root.is_object(), "top level", "a JSON object");
    TokenizerSpec spec;
    read_model(field(root, "model"), spec);
    read_pre_tokenizer(root, spec);
    read_added_tokens(root, spec);
    check_optional_parts(root);
    return spec;
  }

 private:
  void expect(bool ok, const std::string& field, const std::string& expected) const {
    TS_CHECK(ok, "{}: {}: expected {}", source_, field, expected);
  }
  const json& field(const json& obj, const std::string& name) const {
    const auto it = obj.find(name);
    TS_CHECK(it != obj.end(), "{}: {}: missing", source_, name);
    return *it;
  }
  static bool absent_or_null(const json& obj, const char* name) {
    return !obj.contains(name) || obj[name].is_null();
  }
  std::string string_of(const json& j, const std::string& name) const {
    expect(j.is_string(), name, "a string");
    return j.get<std::string>();
  }
  bool bool_or(const json& obj, const char* name, const std::string& where, bool fallback) const {
    if (absent_or_null(obj, name)) return fallback;
    expect(obj[name].is_boolean(), where + "." + name, "true or false");
    return obj[name].get<bool>();
  }
  uint32_t id_of(const json& j, const std::string& name) const {
    expect(j.is_number_unsigned() && j.get<uint64_t>() < (uint64_t(1) << 31), name,
           "a token id (an integer in [0, 2^31))");
    return uint32_t(j.get<uint64_t>());
  }
  std::string type_of(const json& j, const std::string& name) const {
    expect(j.is_object(), name, "an object with a \"type\"");
    return string_of(field(j, "type"), name + ".type");
  }

  void read_model(const json& model, TokenizerSpec& spec) const {
    const std::string type = type_of(model, "model");
    TS_CHECK(type == "BPE", "{}: model.type is \"{}\", expected \"BPE\"", source_, type);
    const bool no_dropout = absent_or_null(model, "dropout") ||
                            (model["dropout"].is_number() && model["dropout"].get<double>() == 0);
    expect(no_dropout, "model.dropout", "null (BPE dropout is for training, not supported)");
    for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const bool none = absent_or_null(model, affix) ||
                        (model[affix].is_string() && model[affix].get<std::string>().empty());
      expect(none, std::string("model.") + affix, "null (byte-level BPE has no word affixes)");
    }
    expect(!bool_or(model, "byte_fallback", "model", false), "model.byte_fallback",
           "false (byte-level BPE needs no byte fallback)");
    spec.ignore_merges = bool_or(model, "ignore_merges", "model", false);

    const json& vocab = field(model, "vocab");
    expect(vocab.is_object(), "model.vocab", "an object of token: id");
    spec.vocab.reserve(vocab.size());
    for (const auto& [token, id] : vocab.items())
      spec.vocab.emplace_back(token, id_of(id, "model.vocab[\"" + token + "\"]"));

    const json& merges = field(model, "merges");
    expect(merges.is_array(), "model.merges", "an array");
    spec.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) spec.merges.push_back(merge_at(merges[i], i));
  }

  // A merge as "left right" or as ["left", "right"].
  std::pair<std::string, std::string> merge_at(const json& m, size_t i) const {
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    if (m.is_array()) {
      expect(m.size() == 2 && m[0].is_string() && m[1].is_string(), where,
             "two token strings [\"left\", \"right\"]");
      return {m[0].get<std::string>(), m[1].get<std::string>()};
    }
    expect(m.is_string(), where, "\"left right\" or [\"left\", \"right\"]");
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    expect(space != std::string::npos && space > 0 && space + 1 < s.size() &&
               s.find(' ', space + 1) == std::string::npos,
           where + " (\"" + s + "\")", "two tokens separated by one space");
    return {s.substr(0, space), s.substr(space + 1)};
  }

  void read_pre_tokenizer(const json& root, TokenizerSpec& spec) const {
    const char* expected = "ByteLevel, or Sequence of Split (regex) and ByteLevel";
    const json& pre = field(root, "pre_tokenizer");
    const std::string type = type_of(pre, "pre_tokenizer");
    if (type == "ByteLevel") {
      read_byte_level(pre, "pre_tokenizer", spec);
      return;
    }
    TS_CHECK(type == "Sequence", "{}: pre_tokenizer.type is \"{}\", expected {}", source_, type,
             expected);
    const json& steps = field(pre, "pretokenizers");
    expect(steps.is_array() && steps.size() == 2, "pre_tokenizer.pretokenizers",
           "two steps: Split (regex) then ByteLevel");
    read_split(steps[0], spec);
    read_byte_level(steps[1], "pre_tokenizer.pretokenizers[1]", spec);
    expect(spec.pattern == read_split_pattern(steps[0]), "pre_tokenizer.pretokenizers[1].use_regex",
           "false (a ByteLevel step after a Split must not split again)");
  }

  void read_byte_level(const json& step, const std::string& where, TokenizerSpec& spec) const {
    const std::string type = type_of(step, where);
    TS_CHECK(type == "ByteLevel", "{}: {}.type is \"{}\", expected \"ByteLevel\"", source_, where,
             type);
    spec.add_prefix_space = bool_or(step, "add_prefix_space", where, false);
    if (bool_or(step, "use_regex", where, true)) spec.pattern = kGpt2Pattern;
  }

  std::string read_split_pattern(const json& split) const {
    const std::string where = "pre_tokenizer.pretokenizers[0].pattern";
    const json& pattern = field(split, "pattern");
    expect(pattern.is_object() && pattern.size() == 1, where,
           "{\"Regex\": \"...\"} or {\"String\": \"...\"}");
    if (pattern.contains("Regex")) return string_of(pattern["Regex"], where + ".Regex");
    expect(pattern.contains("String"), where, "{\"Regex\": \"...\"} or {\"String\": \"...\"}");
    // A literal: quoted so that PCRE2 matches it as written.
    return "\\Q" + string_of(pattern["String"], where + ".String") + "\\E";
  }

  void read_split(const json& split, TokenizerSpec& spec) const {
    const std::string where = "pre_tokenizer.pretokenizers[0]";
    const std::string type = type_of(split, where);
    TS_CHECK(type == "Split", "{}: {}.type is \"{}\", expected \"Split\"", source_, where, type);
    const std::string behavior = string_of(field(split, "behavior"), where + ".behavior");
    TS_CHECK(behavior == "Isolated", "{}: {}.behavior is \"{}\", expected \"Isolated\"", source_,
             where, behavior);
    expect(!bool_or(split, "invert", where, false), where + ".invert", "false");
    spec.pattern = read_split_pattern(split);
  }

  void read_added_tokens(const json& root, TokenizerSpec& spec) const {
    if (absent_or_null(root, "added_tokens")) return;
    const json& tokens = root["added_tokens"];
    expect(tokens.is_array(), "added_tokens", "an array");
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      const json& t = tokens[i];
      expect(t.is_object(), where, "an object");
      AddedToken a;
      a.id = id_of(field(t, "id"), where + ".id");
      a.content = string_of(field(t, "content"), where + ".content");
      a.special = bool_or(t, "special", where, true);
      for (const char* flag : {"single_word", "lstrip", "rstrip"})
        expect(!bool_or(t, flag, where, false), where + "." + flag, "false (not supported)");
      spec.added_tokens.push_back(std::move(a));
    }
  }

  void check_optional_parts(const json& root) const {
    expect(absent_or_null(root, "normalizer"), "normalizer", "null (normalizers not supported)");
    const std::string decoder = type_of(field(root, "decoder"), "decoder");
    TS_CHECK(decoder == "ByteLevel", "{}: decoder.type is \"{}\", expected \"ByteLevel\"", source_,
             decoder);
    // Post-processors add BOS/EOS around a sequence; encode() never adds them (callers do), so
    // ByteLevel (offsets only) and TemplateProcessing (Llama 3's BOS) are accepted and unused.
    if (absent_or_null(root, "post_processor")) return;
    const std::string post = type_of(root["post_processor"], "post_processor");
    TS_CHECK(post == "ByteLevel" || post == "TemplateProcessing",
             "{}: post_processor.type is \"{}\", expected null, \"ByteLevel\" or "
             "\"TemplateProcessing\"",
             source_, post);
  }

  std::string source_;
};

}  // namespace

TokenizerSpec parse_tokenizer_json(const std::string& text, const std::string& source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", source, e.what());
  }
  try {
    return Reader(source).read(root);
  } catch (const json::exception& e) {  // a type the checks above did not foresee
    fail("{}: unexpected tokenizer.json content: {}", source, e.what());
  }
}

TokenizerSpec read_tokenizer_json(const std::string& path) {
  return parse_tokenizer_json(read_small_file(path, kMaxFileBytes), path);
}

std::string tokenizer_json(const TokenizerSpec& spec) {
  using ojson = nlohmann::ordered_json;
  ojson added = ojson::array();
  for (const AddedToken& t : spec.added_tokens)
    added.push_back({{"id", t.id},
                     {"content", t.content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", t.special}});
  const bool gpt2 = spec.pattern == kGpt2Pattern;
  auto byte_level = [&](bool use_regex) {
    return ojson{{"type", "ByteLevel"},
                 {"add_prefix_space", spec.add_prefix_space},
                 {"trim_offsets", true},
                 {"use_regex", use_regex}};
  };
  ojson pre = byte_level(gpt2);
  if (!gpt2 && !spec.pattern.empty()) {
    ojson split = {{"type", "Split"},
                   {"pattern", {{"Regex", spec.pattern}}},
                   {"behavior", "Isolated"},
                   {"invert", false}};
    pre = {{"type", "Sequence"}, {"pretokenizers", {split, byte_level(false)}}};
  }
  std::vector<std::pair<std::string, uint32_t>> by_id = spec.vocab;
  std::sort(by_id.begin(), by_id.end(), [](auto& a, auto& b) { return a.second < b.second; });
  // Appended to the ordered map's vector directly: its operator[] searches linearly, which
  // makes a large vocabulary quadratic. Token texts are unique (they were a map's keys).
  ojson vocab = ojson::object();
  auto& entries = vocab.get_ref<ojson::object_t&>();
  entries.reserve(by_id.size());
  for (const auto& [text, id] : by_id) entries.ojson::object_t::Container::emplace_back(text, id);
  ojson merges = ojson::array();
  for (const auto& [left, right] : spec.merges) merges.push_back(left + " " + right);
  ojson root = {{"version", "1.0"},
                {"truncation", nullptr},
                {"padding", nullptr},
                {"added_tokens", added},
                {"normalizer", nullptr},
                {"pre_tokenizer", pre},
                {"post_processor", nullptr},
                {"decoder", byte_level(true)},
                {"model",
                 {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", spec.ignore_merges},
                  {"vocab", vocab},
                  {"merges", merges}}}};
  return root.dump(1) + "\n";
}

}  // namespace tessera::tokenizer
