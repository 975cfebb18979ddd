// Sampling text from a byte-level GPT.
#pragma once
#include <cstdint>
#include <string>

#include "core/rng.h"
#include "nn/gpt.h"

namespace tessera::train {

struct SampleOptions {
  int64_t tokens = 200;
  float temperature = 1.0f;  // 0: greedy
  int top_k = 0;             // 0: the whole vocabulary
};

// Continues `prompt` (bytes; may be empty) by opt.tokens bytes drawn from the model, each
// conditioned on the last `context` bytes. Requires a vocabulary of 256 (byte-level).
std::string generate_text(const nn::GPT& model, const std::string& prompt, const SampleOptions& opt,
                          Generator& g);

}  // namespace tessera::train
