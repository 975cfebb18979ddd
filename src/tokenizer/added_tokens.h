// Finding added tokens (`<|endoftext|>`, ...) in raw text, before pre-tokenization, as Hugging
// Face does: leftmost match first, the longest token when several start at the same byte.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/spec.h"

namespace tessera::tokenizer {

// A stretch of text: plain text to pre-tokenize (id = kPlainText) or one added token.
struct Segment {
  static constexpr int64_t kPlainText = -1;
  std::string_view text;
  int64_t id = kPlainText;
};

class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);
  // Appends the segments of text, in order; plain segments are never empty.
  void split(std::string_view text, std::vector<Segment>& out) const;
  bool empty() const { return tokens_.empty(); }

 private:
  std::vector<AddedToken> tokens_;                   // longest first
  std::array<std::vector<uint32_t>, 256> by_first_;  // indices into tokens_, by first byte
};

}  // namespace tessera::tokenizer
