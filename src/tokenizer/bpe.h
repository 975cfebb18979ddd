// The byte-level BPE model: a vocabulary of byte strings and ranked merges, applied to one
// pre-tokenized word at a time.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tessera::tokenizer {

// Hashing for maps keyed by std::string that are looked up with a string_view, no copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIds = std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>>;

// Merge `rank` joins tokens `left` and `right` into `merged` (ids); lower ranks merge first.
struct Merge {
  uint32_t left = 0, right = 0, merged = 0;
};

// How merge_symbols finds the next merge: rescanning every pair (fast for the short words that
// make up nearly all text) or a priority queue of candidate pairs (O(n log n) for long words).
// Both give the same result; tests check that.
enum class MergeStrategy { automatic, scan, heap };

class BpeModel {
 public:
  // token_bytes[id] is the token's bytes ("" for ids that are not BPE tokens, such as added
  // tokens outside the vocabulary); merges are in rank order. Every one of the 256 single bytes
  // must be a token (checked by the caller, which names the file).
  BpeModel(std::vector<std::string> token_bytes, const std::vector<Merge>& merges,
           bool ignore_merges);

  // Appends the ids of one word (raw bytes, not byte-level text).
  void encode_word(std::string_view word, std::vector<uint32_t>& out) const;
  // Applies the merges to a sequence of ids in place, lowest rank first, leftmost first on ties.
  void merge_symbols(std::vector<uint32_t>& ids,
                     MergeStrategy strategy = MergeStrategy::automatic) const;

  std::optional<uint32_t> find(std::string_view bytes) const;
  const std::string& token_bytes(uint32_t id) const { return tokens_[id]; }
  size_t size() const { return tokens_.size(); }

 private:
  struct Rule {
    uint32_t rank = 0, merged = 0;
  };
  const Rule* rule(uint32_t left, uint32_t right) const;
  void merge_by_scan(std::vector<uint32_t>& ids) const;
  void merge_by_heap(std::vector<uint32_t>& ids) const;

  std::vector<std::string> tokens_;
  TokenIds ids_;
  std::unordered_map<uint64_t, Rule> rules_;  // key: left << 32 | right
  std::array<uint32_t, 256> byte_ids_{};
  bool ignore_merges_ = false;
};

}  // namespace tessera::tokenizer
