// Hugging Face's tokenizer.json for byte-level BPE (GPT-2, Llama 3 and what `tessera tokenizer
// train` writes): read into a TokenizerSpec, and written from one so that Hugging Face's
// `tokenizers` loads it. What is accepted, and what is refused, is in docs/TOKENIZER.md.
#pragma once
#include <string>

#include "tokenizer/spec.h"

namespace tessera::tokenizer {

// Reads the file; errors name it and the field ("tok.json: model.type is \"WordPiece\",
// expected \"BPE\"").
TokenizerSpec read_tokenizer_json(const std::string& path);
// The same from the file's text; `source` names it in errors.
TokenizerSpec parse_tokenizer_json(const std::string& text, const std::string& source);

// tokenizer.json text: vocabulary by id, merges as "left right" strings, the GPT-2 pattern as a
// ByteLevel pre-tokenizer and any other as Sequence[Split(regex), ByteLevel].
std::string tokenizer_json(const TokenizerSpec& spec);

}  // namespace tessera::tokenizer
