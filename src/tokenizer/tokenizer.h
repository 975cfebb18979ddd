// A byte-level BPE tokenizer as GPT-2 and Llama 3 use it: added tokens matched first, then
// pre-tokenization by regex, then BPE merges on each word's bytes. Reads Hugging Face's
// tokenizer.json (hf_json.h); immutable once built, so one instance serves many threads.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/regex.h"
#include "tokenizer/spec.h"

namespace tessera::tokenizer {

class Tokenizer {
 public:
  // Checks the spec (every merge's parts and result in the vocabulary, all 256 bytes present,
  // ids unique); errors name `source`, the file the spec came from.
  Tokenizer(const TokenizerSpec& spec, const std::string& source);
  // Reads a Hugging Face tokenizer.json.
  static Tokenizer from_file(const std::string& path);

  // Text (UTF-8; invalid input is an Error naming `source` and the byte offset) -> ids. Never
  // adds BOS/EOS (Hugging Face's add_special_tokens=False): callers place those themselves.
  // threads: 0 = OpenMP's default.
  std::vector<uint32_t> encode(std::string_view text, const std::string& source = "text",
                               int threads = 0) const;
  // Many texts at once, in parallel over texts and over chunks of long texts.
  std::vector<std::vector<uint32_t>> encode_batch(const std::vector<std::string_view>& texts,
                                                  const std::vector<std::string>& sources,
                                                  int threads = 0) const;
  // Ids -> the exact bytes they stand for (an Error names an id outside the vocabulary).
  std::string decode(std::span<const uint32_t> ids) const;

  // One more than the largest id (vocabulary and added tokens).
  uint32_t vocab_size() const { return vocab_size_; }
  std::optional<uint32_t> added_token_id(std::string_view content) const;
  const TokenizerSpec& spec() const { return spec_; }

 private:
  struct WordCache;
  struct Unit;
  void cut_into_units(std::string_view text, uint32_t index, std::vector<Unit>& units) const;
  void encode_plain(std::string_view text, WordCache& cache, std::vector<uint32_t>& out) const;

  TokenizerSpec spec_;
  std::string source_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Regex> regex_;  // null: no pre-tokenization
  AddedTokenMatcher added_;
  std::vector<std::string> added_content_;  // by id; "" where not an added token
  uint32_t vocab_size_ = 0;
  bool parallel_within_text_ = false;
};

}  // namespace tessera::tokenizer
