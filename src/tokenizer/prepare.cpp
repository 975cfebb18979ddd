#include "tokenizer/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "data/file_io.h"
#include "data/shard.h"
#include "tokenizer/tokenizer.h"

namespace tessera::tokenizer {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Documents are tokenized in batches of about this many bytes.
constexpr size_t kBatchBytes = 32 << 20;

bool is_json_lines(const std::string& path) {
  return fs::path(path).extension() == ".jsonl";
}

// The input files, folders expanded to their *.txt and *.jsonl files in name order.
std::vector<std::string> list_inputs(const std::vector<std::string>& inputs) {
  TS_CHECK(!inputs.empty(), "prepare: no input files given");
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(in)) {
        const auto ext = e.path().extension();
        if (e.is_regular_file() && (ext == ".txt" || ext == ".jsonl"))
          found.push_back(e.path().string());
      }
      TS_CHECK(!found.empty(), "prepare: folder '{}' has no *.txt or *.jsonl files", in);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
      continue;
    }
    TS_CHECK(fs::is_regular_file(in, ec), "prepare: input '{}' not found", in);
    files.push_back(in);
  }
  return files;
}

// What the shards depend on: the inputs' contents, the tokenizer's and the settings.
json fingerprint(const std::vector<std::string>& files, const PrepareOptions& o, uint32_t eot) {
  json inputs = json::array();
  for (const std::string& f : files) {
    uint64_t bytes = 0;
    const uint32_t crc = crc32_of_file(f, &bytes);
    inputs.push_back({{"path", f}, {"bytes", bytes}, {"crc32", crc}});
  }
  uint64_t tok_bytes = 0;
  const uint32_t tok_crc = crc32_of_file(o.tokenizer, &tok_bytes);
  return {{"format", "tessera prepare 1"},
          {"inputs", inputs},
          {"tokenizer", {{"bytes", tok_bytes}, {"crc32", tok_crc}}},
          {"eot", eot},
          {"val_fraction", o.val_fraction},
          {"val_tokens", o.val_tokens},
          {"shard_tokens", o.shard_tokens}};
}

// "\rprepare: [#####     ] 45% 1.9/4.3 MB, 12.3 MB/s" on stderr, redrawn in place on a
// terminal; elsewhere only the final line is printed.
class ProgressBar {
 public:
  ProgressBar(bool on, uint64_t total) : on_(on), tty_(::isatty(2)), total_(total) {}

  void update(uint64_t done, bool last = false) {
    if (!on_ || (!tty_ && !last)) return;
    const double s = std::chrono::duration<double>(Clock::now() - start_).count();
    const double frac = total_ ? double(done) / double(total_) : 1.0;
    const int filled = int(std::lround(frac * 30));
    std::fprintf(stderr, "%sprepare: [%s%s] %3d%% %.1f/%.1f MB, %.1f MB/s%s", tty_ ? "\r" : "",
                 std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(30 - filled), ' ').c_str(), int(frac * 100), double(done) / 1e6,
                 double(total_) / 1e6, s > 0 ? double(done) / 1e6 / s : 0.0, last ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool on_, tty_;
  uint64_t total_;
  Clock::time_point start_ = Clock::now();
};

// Documents of one input file, with the names errors give them ("a.jsonl line 7").
struct Documents {
  std::string bytes;               // the file
  std::vector<std::string> texts;  // JSON Lines' texts (unescaped); empty for a text file
  std::vector<std::string> sources;
};

Documents read_documents(const std::string& file) {
  Documents d;
  const std::vector<uint8_t> raw = data::read_file_bytes(file, "prepare input");
  d.bytes.assign(raw.begin(), raw.end());
  if (!is_json_lines(file)) {
    d.sources.push_back(file);
    return d;
  }
  size_t line_no = 0;
  for (size_t at = 0; at < d.bytes.size();) {
    size_t end = d.bytes.find('\n', at);
    if (end == std::string::npos) end = d.bytes.size();
    const std::string_view line(d.bytes.data() + at, end - at);
    ++line_no;
    at = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = file + " line " + std::to_string(line_no);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", where, e.what());
    }
    TS_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(),
             "{}: expected a JSON object with a string \"text\" field", where);
    d.texts.push_back(j["text"].get<std::string>());
    d.sources.push_back(where);
  }
  return d;
}

uint32_t end_of_text_id(const Tokenizer& tok, const PrepareOptions& o) {
  if (!o.eot.empty()) {
    const auto id = tok.added_token_id(o.eot);
    TS_CHECK(id.has_value(), "prepare: --eot \"{}\" is not an added token of {}", o.eot,
             o.tokenizer);
    return *id;
  }
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>"})
    if (const auto id = tok.added_token_id(name)) return *id;
  fail(
      "prepare: {} has no <|endoftext|> or <|end_of_text|> added token: name the end-of-text "
      "token with --eot",
      o.tokenizer);
}

// Tokenizes every document, each preceded by `eot`.
std::vector<uint32_t> tokenize_all(const Tokenizer& tok, const std::vector<std::string>& files,
                                   uint32_t eot, bool progress) {
  uint64_t total = 0, done = 0;
  for (const std::string& f : files) total += fs::file_size(f);
  ProgressBar bar(progress, total);
  std::vector<uint32_t> tokens;
  std::vector<Documents> batch;
  size_t batch_bytes = 0;
  auto flush = [&] {
    std::vector<std::string_view> texts;
    std::vector<std::string> sources;
    for (const Documents& d : batch) {
      if (d.texts.empty() && !d.sources.empty()) texts.push_back(d.bytes);
      for (const std::string& t : d.texts) texts.push_back(t);
      sources.insert(sources.end(), d.sources.begin(), d.sources.end());
    }
    for (const auto& ids : tok.encode_batch(texts, sources)) {
      tokens.push_back(eot);
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
    for (const Documents& d : batch) done += d.bytes.size();
    bar.update(done);
    batch.clear();
    batch_bytes = 0;
  };
  for (const std::string& f : files) {
    batch.push_back(read_documents(f));
    batch_bytes += batch.back().bytes.size();
    if (batch_bytes >= kBatchBytes) flush();
  }
  if (!batch.empty()) flush();
  bar.update(done, true);
  return tokens;
}

// Writes tokens [begin, end) as shards NAME_SPLIT_NNNNNN.bin; returns their paths.
std::vector<std::string> write_split(const std::vector<uint32_t>& tokens, size_t begin, size_t end,
                                     const PrepareOptions& o, const std::string& name,
                                     const char* split, bool wide) {
  std::vector<std::string> shards;
  for (size_t at = begin, k = 0; at < end; at += size_t(o.shard_tokens), ++k) {
    const size_t n = std::min(end - at, size_t(o.shard_tokens));
    Tensor t = Tensor::empty({int64_t(n)}, wide ? DType::i32 : DType::u16);
    for (size_t i = 0; i < n; ++i) {
      if (wide) {
        t.data<int32_t>()[i] = int32_t(tokens[at + i]);
      } else {
        t.data<uint16_t>()[i] = uint16_t(tokens[at + i]);
      }
    }
    const std::string file = fmt::format("{}_{}_{:06d}.bin", name, split, k);
    data::write_token_shard((fs::path(o.out_dir) / file).string(), t);
    shards.push_back(file);
  }
  std::string list;
  for (const std::string& s : shards) list += s + "\n";
  write_file_atomically((fs::path(o.out_dir) / fmt::format("{}_{}.list", name, split)).string(),
                        list);
  return shards;
}

// The previous run's manifest, or null when there is none (or it cannot be read: redo).
json read_manifest(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return nullptr;
  try {
    return json::parse(read_small_file(path, 64 << 20));
  } catch (const std::exception&) {
    return nullptr;
  }
}

bool shards_present(const json& manifest, const std::string& dir) {
  for (const char* split : {"train", "val"}) {
    if (!manifest.contains(split) || !manifest[split].is_array()) return false;
    for (const json& f : manifest[split])
      if (!f.is_string() || !fs::is_regular_file(fs::path(dir) / f.get<std::string>()))
        return false;
  }
  return true;
}

PrepareSummary summary_of(const json& manifest, const std::string& dir, const std::string& path) {
  PrepareSummary s;
  s.manifest = path;
  s.train_tokens = manifest.value("train_tokens", int64_t(0));
  s.val_tokens = manifest.value("val_tokens", int64_t(0));
  for (const json& f : manifest["train"]) s.train_shards.push_back((fs::path(dir) / f).string());
  for (const json& f : manifest["val"]) s.val_shards.push_back((fs::path(dir) / f).string());
  return s;
}

}  // namespace

PrepareSummary prepare(const PrepareOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  TS_CHECK(o.shard_tokens > 0 && o.shard_tokens < (int64_t(1) << 31),
           "prepare: --shard-tokens {}: expected 1 to 2^31 - 1", o.shard_tokens);
  TS_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "prepare: --val-fraction {}: expected [0, 1)",
           o.val_fraction);
  TS_CHECK(!o.out_dir.empty(), "prepare: no output folder (--out)");
  const std::vector<std::string> files = list_inputs(o.inputs);
  const std::string name = o.name.empty() ? fs::path(files[0]).stem().string() : o.name;
  const std::string manifest_path = (fs::path(o.out_dir) / (name + ".prepare.json")).string();

  const Tokenizer tok = Tokenizer::from_file(o.tokenizer);
  const uint32_t eot = end_of_text_id(tok, o);
  const json print = fingerprint(files, o, eot);
  const json previous = read_manifest(manifest_path);
  if (previous.is_object() && previous.value("fingerprint", json()) == print &&
      shards_present(previous, o.out_dir)) {
    PrepareSummary s = summary_of(previous, o.out_dir, manifest_path);
    s.up_to_date = true;
    return s;
  }

  const std::vector<uint32_t> tokens = tokenize_all(tok, files, eot, o.progress);
  const size_t val = o.val_tokens >= 0
                         ? std::min(tokens.size(), size_t(o.val_tokens))
                         : size_t(std::llround(o.val_fraction * double(tokens.size())));
  const bool wide = tok.vocab_size() > 65536;
  fs::create_directories(o.out_dir);
  json manifest = {{"fingerprint", print},
                   {"train_tokens", tokens.size() - val},
                   {"val_tokens", val},
                   {"token_bits", wide ? 32 : 16},
                   {"val", write_split(tokens, 0, val, o, name, "val", wide)},
                   {"train", write_split(tokens, val, tokens.size(), o, name, "train", wide)}};
  // Shards of an earlier, larger run that this one does not have.
  if (previous.is_object() && shards_present(previous, o.out_dir)) {
    for (const char* split : {"train", "val"})
      for (const json& f : previous[split])
        if (std::find(manifest[split].begin(), manifest[split].end(), f) == manifest[split].end())
          fs::remove(fs::path(o.out_dir) / f.get<std::string>());
  }
  write_file_atomically(manifest_path, manifest.dump(1) + "\n");
  PrepareSummary s = summary_of(manifest, o.out_dir, manifest_path);
  uint64_t bytes = 0;
  for (const std::string& f : files) bytes += fs::file_size(f);
  s.input_mb = double(bytes) / 1e6;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s;
}

std::string describe(const PrepareSummary& s) {
  if (s.up_to_date)
    return fmt::format("prepare: up to date ({}): {} train tokens, {} val tokens", s.manifest,
                       s.train_tokens, s.val_tokens);
  return fmt::format(
      "prepare: {} train tokens in {} shard(s), {} val tokens in {} shard(s); {:.1f} MB in "
      "{:.2f} s; manifest {}",
      s.train_tokens, s.train_shards.size(), s.val_tokens, s.val_shards.size(), s.input_mb,
      s.seconds, s.manifest);
}

}  // namespace tessera::tokenizer
