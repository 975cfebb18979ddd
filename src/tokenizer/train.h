// Training a byte-level BPE vocabulary on the user's text, as Hugging Face's BpeTrainer does.
//
// The words of the text (its pre-tokenization pieces, split by `pattern` after cutting out the
// special tokens) are counted; each word starts as its bytes; then, until the vocabulary has
// vocab_size tokens, the most frequent adjacent pair of tokens, summed over the words with
// their counts, is merged into a new token. Pair counts are updated incrementally, only in the
// words that held the merged pair.
//
// Ids and ties are deterministic and follow Hugging Face's trainer, so both learn the same
// merges from the same words: special tokens take ids 0..k-1, the 256 bytes the next ids in
// the order of their byte-level characters' code points, merged tokens the ids after that in
// merge order; among pairs of equal count, the one with the smaller (left id, right id) wins.
// Training stops early when no pair occurs any more.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/spec.h"

namespace tessera::tokenizer {

// texts: UTF-8 (sources[i] names texts[i] in errors; empty sources = "text N").
// pattern: the pre-tokenization regex (regex.h's kGpt2Pattern, kLlama3Pattern or another).
TokenizerSpec train_bpe(const std::vector<std::string_view>& texts, int64_t vocab_size,
                        const std::string& pattern, const std::vector<std::string>& special_tokens,
                        const std::vector<std::string>& sources = {});

}  // namespace tessera::tokenizer
