#include "tokenizer/tokenizer.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/utf8.h"

namespace tessera::tokenizer {

namespace {

// Words longer than this are not cached (rare, and would crowd the cache).
constexpr size_t kCacheMaxWordBytes = 128;
// A thread's word cache is emptied when it holds this many words.
constexpr size_t kCacheMaxWords = 1 << 17;

// The number of ids in the tables: a vocabulary may have holes, but not many more ids than
// entries, which keeps a hostile file from asking for a huge table.
uint32_t checked_vocab_size(const TokenizerSpec& spec, const std::string& source) {
  const uint64_t entries = spec.vocab.size() + spec.added_tokens.size();
  uint64_t size = 0;
  for (const auto& [text, id] : spec.vocab) size = std::max<uint64_t>(size, uint64_t(id) + 1);
  for (const AddedToken& t : spec.added_tokens) size = std::max<uint64_t>(size, uint64_t(t.id) + 1);
  TS_CHECK(size <= 2 * entries + 1024,
           "{}: largest token id {} with {} vocabulary entries and added tokens: expected ids "
           "below twice the number of entries (plus 1024)",
           source, size - 1, entries);
  return uint32_t(size);
}

}  // namespace

struct Tokenizer::WordCache {
  std::unordered_map<std::string, std::vector<uint32_t>, StringHash, std::equal_to<>> words;
};

// A piece of one text to encode on its own: plain text or one added token.
struct Tokenizer::Unit {
  uint32_t text = 0;
  std::string_view piece;
  int64_t id = Segment::kPlainText;
};

Tokenizer::Tokenizer(const TokenizerSpec& spec, const std::string& source)
    : spec_(spec), source_(source), added_(spec.added_tokens) {
  vocab_size_ = checked_vocab_size(spec, source);
  added_content_.resize(vocab_size_);
  for (const AddedToken& t : spec.added_tokens) {
    TS_CHECK(!t.content.empty(), "{}: added_tokens: token id {} has empty content", source, t.id);
    added_content_[t.id] = t.content;
  }
  std::vector<std::string> token_bytes(vocab_size_);
  TokenIds id_of_text;
  std::vector<bool> seen(vocab_size_);
  for (const auto& [text, id] : spec.vocab) {
    TS_CHECK(!seen[id], "{}: model.vocab: id {} is given to two tokens, expected unique ids",
             source, id);
    seen[id] = true;
    TS_CHECK(!text.empty(), "{}: model.vocab: id {} is an empty token", source, id);
    id_of_text.emplace(text, id);
    if (from_byte_level(text, token_bytes[id])) continue;
    TS_CHECK(!added_content_[id].empty(),
             "{}: model.vocab: token \"{}\" (id {}) has characters outside the byte-level "
             "alphabet, expected byte-level text (\"Ġthe\")",
             source, text, id);
    token_bytes[id].clear();
  }
  for (int b = 0; b < 256; ++b) {
    const std::string text = to_byte_level(std::string(1, char(b)));
    TS_CHECK(id_of_text.contains(text),
             "{}: model.vocab has no token for byte 0x{:02X} (\"{}\"): a byte-level BPE "
             "vocabulary needs all 256 bytes",
             source, b, text);
  }
  std::vector<Merge> merges;
  merges.reserve(spec.merges.size());
  for (size_t i = 0; i < spec.merges.size(); ++i) {
    // Plain references: clang 14 cannot capture structured bindings in the lambda below.
    const std::string& left = spec.merges[i].first;
    const std::string& right = spec.merges[i].second;
    const auto id = [&](const std::string& text, const char* what) {
      const auto it = id_of_text.find(text);
      TS_CHECK(it != id_of_text.end(),
               "{}: model.merges[{}] (\"{} {}\"): {} \"{}\" is not in model.vocab, expected "
               "every merge's parts and result in the vocabulary",
               source, i, left, right, what, text);
      return it->second;
    };
    merges.push_back({id(left, "part"), id(right, "part"), id(left + right, "result")});
  }
  model_ = std::make_unique<BpeModel>(std::move(token_bytes), merges, spec.ignore_merges);
  if (!spec.pattern.empty())
    regex_ = std::make_unique<Regex>(spec.pattern, source + ": pre_tokenizer");
  // add_prefix_space applies to the start of each stretch of text, which a cut would move.
  parallel_within_text_ = !spec.add_prefix_space && pattern_allows_cuts(spec.pattern);
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  return Tokenizer(read_tokenizer_json(path), path);
}

std::optional<uint32_t> Tokenizer::added_token_id(std::string_view content) const {
  for (const AddedToken& t : spec_.added_tokens)
    if (t.content == content) return t.id;
  return std::nullopt;
}

void Tokenizer::cut_into_units(std::string_view text, uint32_t index,
                               std::vector<Unit>& units) const {
  std::vector<Segment> segments;
  added_.split(text, segments);
  for (const Segment& s : segments) {
    if (s.id != Segment::kPlainText || !parallel_within_text_) {
      units.push_back({index, s.text, s.id});
      continue;
    }
    for (const std::string_view piece : cut_for_threads(s.text)) units.push_back({index, piece});
  }
}

void Tokenizer::encode_plain(std::string_view text, WordCache& cache,
                             std::vector<uint32_t>& out) const {
  std::string prefixed;
  if (spec_.add_prefix_space && !text.starts_with(' ')) {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  if (!regex_) {
    model_->encode_word(text, out);
    return;
  }
  std::vector<Span> words;
  regex_->split(text, words);
  for (const Span& w : words) {
    const std::string_view word = text.substr(w.begin, w.end - w.begin);
    if (word.size() > kCacheMaxWordBytes) {
      model_->encode_word(word, out);
      continue;
    }
    if (const auto hit = cache.words.find(word); hit != cache.words.end()) {
      out.insert(out.end(), hit->second.begin(), hit->second.end());
      continue;
    }
    const size_t start = out.size();
    model_->encode_word(word, out);
    if (cache.words.size() >= kCacheMaxWords) cache.words.clear();
    cache.words.emplace(word,
                        std::vector<uint32_t>(out.begin() + std::ptrdiff_t(start), out.end()));
  }
}

std::vector<std::vector<uint32_t>> Tokenizer::encode_batch(
    const std::vector<std::string_view>& texts, const std::vector<std::string>& sources,
    int threads) const {
  TS_ASSERT(texts.size() == sources.size());
  std::vector<Unit> units;
  for (size_t i = 0; i < texts.size(); ++i) {
    check_utf8(texts[i], sources[i]);
    cut_into_units(texts[i], uint32_t(i), units);
  }
  std::vector<std::vector<uint32_t>> unit_ids(units.size());
  std::exception_ptr error;
  // No more threads than units, nor than 256 KiB of text each (about 8 ms of work): an idle
  // thread still has to be scheduled to reach the region's closing barrier, which on a busy
  // machine cost a 3 KB text 50 ms.
  size_t bytes = 0;
  for (const std::string_view t : texts) bytes += t.size();
  const size_t wanted = threads > 0 ? size_t(threads) : size_t(omp_get_max_threads());
  const int n = int(std::max<size_t>(1, std::min({wanted, units.size(), 1 + bytes / (256 << 10)})));
#pragma omp parallel num_threads(n)
  {
    WordCache cache;
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < int64_t(units.size()); ++u) {
      try {
        const Unit& unit = units[size_t(u)];
        if (unit.id == Segment::kPlainText) {
          unit_ids[size_t(u)].reserve(unit.piece.size() / 3);  // about 4 bytes per token
          encode_plain(unit.piece, cache, unit_ids[size_t(u)]);
        } else {
          unit_ids[size_t(u)].push_back(uint32_t(unit.id));
        }
      } catch (...) {
#pragma omp critical(tessera_tokenizer_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
  std::vector<std::vector<uint32_t>> out(texts.size());
  std::vector<size_t> sizes(texts.size());
  for (size_t u = 0; u < units.size(); ++u) sizes[units[u].text] += unit_ids[u].size();
  for (size_t t = 0; t < texts.size(); ++t) out[t].reserve(sizes[t]);
  for (size_t u = 0; u < units.size(); ++u) {
    auto& dst = out[units[u].text];
    dst.insert(dst.end(), unit_ids[u].begin(), unit_ids[u].end());
  }
  return out;
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text, const std::string& source,
                                        int threads) const {
  return std::move(encode_batch({text}, {source}, threads)[0]);
}

std::string Tokenizer::decode(std::span<const uint32_t> ids) const {
  std::string out;
  for (const uint32_t id : ids) {
    TS_CHECK(id < vocab_size_, "decode: token id {} is outside the vocabulary (size {})", id,
             vocab_size_);
    const std::string& bytes =
        added_content_[id].empty() ? model_->token_bytes(id) : added_content_[id];
    TS_CHECK(!bytes.empty(), "decode: token id {} is not in the vocabulary (a gap in its ids)", id);
    out += bytes;
  }
  return out;
}

}  // namespace tessera::tokenizer
