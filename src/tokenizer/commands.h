// The work behind `tessera tokenizer train` and `tessera tokenizer encode`, kept out of the
// command-line parser (src/cli/main.cpp).
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace tessera::tokenizer {

// Trains a byte-level BPE on the files (UTF-8 text; each file one text) and writes an
// Hugging Face tokenizer.json to `out` (via a temporary file). pattern: "gpt2", "llama3" or a
// regex. Returns a line for people: vocabulary, merges, time.
std::string train_tokenizer_files(const std::vector<std::string>& files, int64_t vocab_size,
                                  const std::string& pattern,
                                  const std::vector<std::string>& special_tokens,
                                  const std::string& out);

// Encodes a file with a tokenizer.json: writes its ids to `ids` (space-separated, one line) or,
// with count_only, just their number; then "N tokens from X MB in T s (R MB/s, K threads at
// most)" to `log` (the time of encoding alone: not reading the file or the tokenizer).
void encode_file(const std::string& tokenizer_json, const std::string& file, bool count_only,
                 std::ostream& ids, std::ostream& log);

}  // namespace tessera::tokenizer
