#include "tokenizer/commands.h"

#include <omp.h>

#include <chrono>

#include "core/error.h"
#include "core/file_io.h"
#include "data/file_io.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/train.h"

namespace tessera::tokenizer {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string read_text_file(const std::string& path) {
  const std::vector<uint8_t> bytes = data::read_file_bytes(path, "text");
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

std::string train_tokenizer_files(const std::vector<std::string>& files, int64_t vocab_size,
                                  const std::string& pattern,
                                  const std::vector<std::string>& special_tokens,
                                  const std::string& out) {
  TS_CHECK(!files.empty(), "tokenizer train: no input files given");
  const auto start = Clock::now();
  std::vector<std::string> texts;
  for (const std::string& f : files) texts.push_back(read_text_file(f));
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  const TokenizerSpec spec =
      train_bpe(views, vocab_size, pattern_by_name(pattern), special_tokens, files);
  write_file_atomically(out, tokenizer_json(spec));
  return fmt::format("tokenizer train: wrote {}: {} tokens ({} merges) in {:.2f} s", out,
                     spec.vocab.size(), spec.merges.size(), seconds_since(start));
}

void encode_file(const std::string& tokenizer_json, const std::string& file, bool count_only,
                 std::ostream& ids, std::ostream& log) {
  const Tokenizer tok = Tokenizer::from_file(tokenizer_json);
  const std::string text = read_text_file(file);
  const auto start = Clock::now();
  const std::vector<uint32_t> out = tok.encode(text, file);
  const double s = seconds_since(start);
  if (count_only) {
    ids << out.size() << "\n";
  } else {
    std::string line;
    line.reserve(out.size() * 6);
    for (size_t i = 0; i < out.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(out[i]);
    }
    ids << line << "\n";
  }
  const double mb = double(text.size()) / 1e6;
  log << fmt::format(
      "tokenizer encode: {} tokens from {:.2f} MB in {:.3f} s ({:.1f} MB/s, {} "
      "threads at most)\n",
      out.size(), mb, s, s > 0 ? mb / s : 0.0, omp_get_max_threads());
}

}  // namespace tessera::tokenizer
