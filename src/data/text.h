// Byte-level text corpora: any file read as bytes, each byte one token (vocabulary 256), split
// into a training prefix and a validation suffix.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace tessera::data {

constexpr int kByteVocabSize = 256;

// A corpus split into a training prefix and a validation suffix. Both are u16 [n] views of one
// storage (no copy).
struct TextSplits {
  Tensor train;
  Tensor val;
};

// Reads a file's bytes as u16 tokens [size]. Error if the file is missing or has fewer than
// min_tokens bytes.
Tensor read_byte_tokens(const std::string& path, int64_t min_tokens = 1);

// Splits 1-D u16 tokens so the last floor(val_fraction * n) tokens are validation. val_fraction
// must be in [0, 1); each non-empty split must hold at least min_split_tokens tokens (for a
// GPT batch that is seq_len + 1). `what` names the source in error messages.
TextSplits split_tokens(const Tensor& tokens, double val_fraction, int64_t min_split_tokens,
                        const std::string& what);

// read_byte_tokens + split_tokens.
TextSplits load_byte_corpus(const std::string& path, double val_fraction, int64_t min_split_tokens);

}  // namespace tessera::data
