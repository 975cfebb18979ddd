// Sampling from a language model (any decoder kind) with a key/value cache: the prompt runs
// once, then each new token runs alone against the cached keys and values.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/decoder.h"
#include "tokenizer/tokenizer.h"
#include "train/config.h"

namespace tessera::train {

struct SampleOptions {
  int64_t tokens = 200;
  float temperature = 1.0f;  // 0: greedy
  int top_k = 0;             // keep the k likeliest (0: the whole vocabulary)
  float top_p = 1.0f;        // then the smallest set whose probability reaches top_p (1: all)
};

// The token drawn from one row of logits [vocab] under opt (temperature, top-k, top-p), with one
// draw from g (none when greedy).
int32_t sample_token(const float* logits, int64_t vocab, const SampleOptions& opt, Generator& g);

// Continues `prompt` (token ids, not empty; its last `context` tokens are read) by opt.tokens
// tokens. When the sequence reaches the model's context, the cache is rebuilt from the last
// context / 2 tokens, so every token is conditioned on at least that many.
std::vector<int32_t> generate(const nn::Decoder& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt, Generator& g);

// data.tokenizer of a language-model config, its vocabulary checked to fit model.vocab_size
// (errors name the key); null when the key is "".
std::unique_ptr<tokenizer::Tokenizer> load_data_tokenizer(const Config& cfg);

// Continues the text `prompt` and returns the new text. With a tokenizer, the prompt is
// encoded and the tokens decoded by it ("" starts after its end-of-text token); without one
// the model must be byte-level (vocabulary 256; "" starts at a line start).
std::string generate_text(const nn::Decoder& model, const std::string& prompt,
                          const SampleOptions& opt, Generator& g,
                          const tokenizer::Tokenizer* tok = nullptr);

}  // namespace tessera::train
