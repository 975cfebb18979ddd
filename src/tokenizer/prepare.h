// `tessera prepare`: text files, JSON Lines or folders of them, tokenized into llm.c token
// shards for training (docs/TOKENIZER.md, docs/formats/token_shard.md).
//
// Each document (a text file, or one JSON Lines record's "text") is preceded by the end-of-text
// token, as llm.c's data scripts do, so documents are separated by it. The first val tokens of
// the stream form the validation split (llm.c's convention: validation first), the rest the
// training split; each is cut into shards of at most shard_tokens tokens, written as
// OUT/NAME_{val,train}_NNNNNN.bin with a list file OUT/NAME_{val,train}.list, and uint16 tokens
// unless the vocabulary has more than 65,536 ids (then uint32, llm.c's Llama 3 layout).
//
// Re-running with the same inputs (contents), tokenizer and settings does nothing: OUT/
// NAME.prepare.json records a fingerprint of them and the shards written, and is written last.
// A run that differs rewrites the shards (each via a temporary file renamed into place, so the
// same inputs give byte-identical files) and removes shards the new run no longer has.
//
// The tokens are held in memory until written: 4 bytes per token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::tokenizer {

struct PrepareOptions {
  // Files (*.jsonl: one JSON object with a string "text" per line; anything else: one document
  // of UTF-8 text) or folders (their *.txt and *.jsonl files, recursively, in name order).
  std::vector<std::string> inputs;
  std::string tokenizer;  // tokenizer.json
  std::string out_dir;
  std::string name;           // shard file prefix; "" = the first input's name without extension
  double val_fraction = 0.0;  // of all tokens, used when val_tokens < 0
  int64_t val_tokens = -1;    // the first N tokens go to validation
  int64_t shard_tokens = 100'000'000;
  std::string eot;       // the end-of-text token; "" = <|endoftext|> or else <|end_of_text|>
  bool progress = true;  // a progress bar with MB/s on stderr
};

struct PrepareSummary {
  bool up_to_date = false;  // nothing to do: the shards match the inputs and settings
  int64_t train_tokens = 0, val_tokens = 0;
  std::vector<std::string> train_shards, val_shards;
  std::string manifest;  // OUT/NAME.prepare.json
  double input_mb = 0, seconds = 0;
};

PrepareSummary prepare(const PrepareOptions& options);

// One line for people: tokens and shards per split, or "up to date".
std::string describe(const PrepareSummary& summary);

}  // namespace tessera::tokenizer
