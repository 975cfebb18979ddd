// What a byte-level BPE tokenizer is, as plain data: what tokenizer.json holds (hf_json.h reads
// and writes it) and what train_bpe produces.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera::tokenizer {

// A token matched in the raw text before pre-tokenization (`<|endoftext|>`, `<|begin_of_text|>`)
// and emitted as its id; decoded back to its content.
struct AddedToken {
  std::string content;
  uint32_t id = 0;
  bool special = true;
};

struct TokenizerSpec {
  // Token text as tokenizer.json stores it (byte-level characters: "Ġthe") and its id.
  std::vector<std::pair<std::string, uint32_t>> vocab;
  // Merges in rank order, as (left, right) token texts.
  std::vector<std::pair<std::string, std::string>> merges;
  // The pre-tokenization regex; "" = each stretch of text between added tokens is one word.
  std::string pattern;
  bool add_prefix_space = false;  // ByteLevel: a space before text that does not start with one
  bool ignore_merges = false;     // a word that is itself a token is emitted whole (Llama 3)
  std::vector<AddedToken> added_tokens;
};

}  // namespace tessera::tokenizer
