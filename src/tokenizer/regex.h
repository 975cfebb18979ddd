// Pre-tokenization: cutting text into words with the regex a tokenizer.json names, run by PCRE2
// with UTF and Unicode properties (\p{L}, \s and (?i) as in Unicode) and JIT-compiled, so the
// GPT-2 and Llama 3 patterns run exactly as written.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::tokenizer {

// GPT-2's pattern (also what a ByteLevel pre-tokenizer with use_regex = true applies).
extern const char* const kGpt2Pattern;
// Llama 3's (tiktoken cl100k-style: case-insensitive contractions, numbers in groups of 3).
extern const char* const kLlama3Pattern;

// "gpt2" or "llama3" -> the pattern; anything else is taken as a pattern itself.
std::string pattern_by_name(const std::string& name_or_pattern);

// Whether text may be cut into pieces that are pre-tokenized independently, with the same
// words: true for the GPT-2 and Llama 3 patterns (cut_for_threads says where).
bool pattern_allows_cuts(const std::string& pattern);

// Cuts text into pieces of about 64 KiB for threads to pre-tokenize independently, each cut
// after a '\n' that follows a visible ASCII character and precedes an ASCII letter. No match of
// the GPT-2 or Llama 3 pattern spans such a newline or looks past it (docs/TOKENIZER.md goes
// through the alternatives), so the words are those of the whole text. Text without such a
// place stays whole.
std::vector<std::string_view> cut_for_threads(std::string_view text);

// A piece of text: bytes [begin, end) of the text it was cut from.
struct Span {
  uint32_t begin = 0;
  uint32_t end = 0;
};

class Regex {
 public:
  // Compiles the pattern; an Error names `source` (the file and field it came from) and the
  // offset in the pattern where PCRE2 stopped.
  Regex(const std::string& pattern, const std::string& source);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  const std::string& pattern() const { return pattern_; }

  // Appends to `pieces` the pieces of text (valid UTF-8, under 4 GiB) in order: every match and
  // every gap between matches (Hugging Face's "Isolated" split), so the pieces cover the text.
  // Empty matches are skipped.
  void split(std::string_view text, std::vector<Span>& pieces) const;

 private:
  struct Compiled;
  std::string pattern_, source_;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace tessera::tokenizer
