#include "tokenizer/train.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <exception>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace tessera::tokenizer {

namespace {

using WordCounts = std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>>;

// A distinct word of the corpus: its current tokens and how often it occurs.
struct Word {
  std::vector<uint32_t> symbols;
  uint64_t count = 0;
};

uint64_t pair_key(uint32_t left, uint32_t right) {
  return uint64_t(left) << 32 | right;
}

// Counts the words of every text (between special tokens, pre-tokenized by `regex`), in
// parallel over pieces of the texts.
WordCounts count_words(const std::vector<std::string_view>& texts,
                       const std::vector<std::string>& sources, const Regex& regex,
                       const AddedTokenMatcher& specials) {
  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < texts.size(); ++i) {
    check_utf8(texts[i], sources.empty() ? "text " + std::to_string(i) : sources[i]);
    std::vector<Segment> segments;
    specials.split(texts[i], segments);
    for (const Segment& s : segments) {
      if (s.id != Segment::kPlainText) continue;
      if (!pattern_allows_cuts(regex.pattern())) {
        pieces.push_back(s.text);
        continue;
      }
      for (const std::string_view p : cut_for_threads(s.text)) pieces.push_back(p);
    }
  }
  const int threads =
      int(std::min<size_t>(size_t(omp_get_max_threads()), std::max<size_t>(pieces.size(), 1)));
  std::vector<WordCounts> partial(static_cast<size_t>(threads));
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    WordCounts& counts = partial[size_t(omp_get_thread_num())];
    std::vector<Span> words;
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < int64_t(pieces.size()); ++p) {
      try {
        words.clear();
        regex.split(pieces[size_t(p)], words);
        for (const Span& w : words) {
          const std::string_view word = pieces[size_t(p)].substr(w.begin, w.end - w.begin);
          const auto it = counts.find(word);
          if (it != counts.end()) {
            ++it->second;
          } else {
            counts.emplace(word, 1);
          }
        }
      } catch (...) {
#pragma omp critical(tessera_train_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
  WordCounts total = std::move(partial[0]);
  for (size_t t = 1; t < partial.size(); ++t)
    for (auto& [word, n] : partial[t]) total[word] += n;
  return total;
}

// The merge loop's state: the words as token ids, every adjacent pair's count over the corpus,
// and which words hold each pair.
class Merger {
 public:
  Merger(std::vector<Word> words, std::vector<std::string> tokens)
      : words_(std::move(words)), tokens_(std::move(tokens)) {
    for (size_t t = 0; t < tokens_.size(); ++t) ids_.emplace(tokens_[t], uint32_t(t));
    for (uint32_t w = 0; w < words_.size(); ++w) {
      const auto& s = words_[w].symbols;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t key = pair_key(s[i], s[i + 1]);
        counts_[key] += int64_t(words_[w].count);
        where_[key].push_back(w);
      }
    }
    for (const auto& [key, count] : counts_) queue_.push({count, key});
  }

  // Merges the most frequent pair; false when no pair is left.
  bool merge_best() {
    while (!queue_.empty()) {
      const Candidate top = queue_.top();
      queue_.pop();
      const int64_t now = counts_[top.pair];
      if (now != top.count) {  // counts only fall, except for new pairs (pushed when made)
        if (now > 0) queue_.push({now, top.pair});
        continue;
      }
      if (now < 1) return false;
      apply(uint32_t(top.pair >> 32), uint32_t(top.pair));
      return true;
    }
    return false;
  }

  size_t vocab_size() const { return tokens_.size(); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  const std::vector<std::pair<uint32_t, uint32_t>>& merges() const { return merges_; }

 private:
  struct Candidate {
    int64_t count;
    uint64_t pair;
    // The queue's top is the largest: the higher count, then the smaller pair of ids.
    bool operator<(const Candidate& o) const {
      return count != o.count ? count < o.count : pair > o.pair;
    }
  };

  uint32_t token_for(const std::string& bytes) {
    const auto [it, added] = ids_.emplace(bytes, uint32_t(tokens_.size()));
    if (added) tokens_.push_back(bytes);
    return it->second;
  }

  void apply(uint32_t left, uint32_t right) {
    const uint64_t key = pair_key(left, right);
    const uint32_t merged = token_for(tokens_[left] + tokens_[right]);
    merges_.emplace_back(left, right);
    std::vector<uint32_t> holders = std::move(where_[key]);
    where_.erase(key);
    std::sort(holders.begin(), holders.end());
    holders.erase(std::unique(holders.begin(), holders.end()), holders.end());
    std::vector<uint64_t> grown;
    for (const uint32_t w : holders) merge_in_word(w, left, right, merged, grown);
    std::sort(grown.begin(), grown.end());
    grown.erase(std::unique(grown.begin(), grown.end()), grown.end());
    for (const uint64_t p : grown)
      if (counts_[p] > 0) queue_.push({counts_[p], p});
  }

  // Replaces each (left, right) in the word, left to right, by `merged`, and updates the counts
  // of the pairs around it; the pairs it creates go to `grown`.
  void merge_in_word(uint32_t w, uint32_t left, uint32_t right, uint32_t merged,
                     std::vector<uint64_t>& grown) {
    auto& s = words_[w].symbols;
    const int64_t n = int64_t(words_[w].count);
    auto change = [&](uint32_t a, uint32_t b, int64_t delta) {
      const uint64_t p = pair_key(a, b);
      counts_[p] += delta * n;
      if (delta > 0) where_[p].push_back(w), grown.push_back(p);
    };
    size_t out = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
        if (out > 0) change(s[out - 1], left, -1), change(s[out - 1], merged, +1);
        if (i + 2 < s.size()) change(right, s[i + 2], -1), change(merged, s[i + 2], +1);
        counts_[pair_key(left, right)] -= n;
        s[out++] = merged;
        ++i;
      } else {
        s[out++] = s[i];
      }
    }
    s.resize(out);
  }

  std::vector<Word> words_;
  std::vector<std::string> tokens_;  // bytes, by id
  TokenIds ids_;
  std::unordered_map<uint64_t, int64_t> counts_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where_;
  std::priority_queue<Candidate> queue_;
  std::vector<std::pair<uint32_t, uint32_t>> merges_;
};

// Special tokens, then the 256 bytes by the code point of their byte-level character.
std::vector<std::string> initial_tokens(const std::vector<std::string>& special_tokens) {
  std::vector<std::string> tokens = special_tokens;
  std::vector<int> bytes(256);
  for (int b = 0; b < 256; ++b) bytes[size_t(b)] = b;
  const auto& chars = byte_level_chars();
  std::sort(bytes.begin(), bytes.end(),
            [&](int a, int b) { return chars[size_t(a)] < chars[size_t(b)]; });
  for (const int b : bytes) tokens.emplace_back(1, char(b));
  return tokens;
}

}  // namespace

TokenizerSpec train_bpe(const std::vector<std::string_view>& texts, int64_t vocab_size,
                        const std::string& pattern, const std::vector<std::string>& special_tokens,
                        const std::vector<std::string>& sources) {
  TS_ASSERT(sources.empty() || sources.size() == texts.size());
  const int64_t smallest = 256 + int64_t(special_tokens.size());
  TS_CHECK(vocab_size >= smallest && vocab_size <= (int64_t(1) << 31),
           "train_bpe: vocab_size = {}: expected at least {} (256 bytes + {} special tokens) and "
           "below 2^31",
           vocab_size, smallest, special_tokens.size());
  TokenizerSpec spec;
  spec.pattern = pattern;
  for (size_t i = 0; i < special_tokens.size(); ++i) {
    const std::string& t = special_tokens[i];
    check_utf8(t, "train_bpe: special token " + std::to_string(i));
    TS_CHECK(t.size() > 1,
             "train_bpe: special token {} (\"{}\"): expected 2 or more bytes (a "
             "single byte is a token already)",
             i, t);
    TS_CHECK(std::count(special_tokens.begin(), special_tokens.end(), t) == 1,
             "train_bpe: special token \"{}\" is listed twice", t);
    spec.added_tokens.push_back({t, uint32_t(i), true});
  }
  const Regex regex(pattern, "train_bpe: pattern");
  const WordCounts counts =
      count_words(texts, sources, regex, AddedTokenMatcher(spec.added_tokens));

  std::vector<std::string> tokens = initial_tokens(special_tokens);
  std::array<uint32_t, 256> byte_id{};
  for (size_t id = special_tokens.size(); id < tokens.size(); ++id)
    byte_id[uint8_t(tokens[id][0])] = uint32_t(id);
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [text, n] : counts) {
    Word w{{}, n};
    for (const char c : text) w.symbols.push_back(byte_id[uint8_t(c)]);
    words.push_back(std::move(w));
  }
  Merger merger(std::move(words), std::move(tokens));
  while (int64_t(merger.vocab_size()) < vocab_size && merger.merge_best()) {
  }

  const auto& final_tokens = merger.tokens();
  for (size_t id = 0; id < final_tokens.size(); ++id) {
    const bool special = id < special_tokens.size();
    spec.vocab.emplace_back(special ? final_tokens[id] : to_byte_level(final_tokens[id]),
                            uint32_t(id));
  }
  for (const auto& [left, right] : merger.merges())
    spec.merges.emplace_back(to_byte_level(final_tokens[left]), to_byte_level(final_tokens[right]));
  return spec;
}

}  // namespace tessera::tokenizer
