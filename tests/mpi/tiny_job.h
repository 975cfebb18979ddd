// A tiny GPT training job for the distributed tests (single-process and under mpirun): a small
// generated corpus with learnable structure and an f32 config that trains in milliseconds a step.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "core/rng.h"
#include "train/config.h"

namespace tessera::testing {

inline std::filesystem::path write_tiny_corpus(const std::filesystem::path& dir) {
  const char* words[] = {"and", "the",     "lord",   "said",  "unto",  "moses", "in",  "beginning",
                         "god", "created", "heaven", "earth", "light", "was",   "good"};
  Generator g(5);
  std::string text;
  for (int verse = 0; text.size() < 30000; ++verse) {
    text += std::to_string(verse % 50 + 1) + " ";
    const int n = 6 + int(g.next_u64() % 8);
    for (int i = 0; i < n; ++i)
      text += std::string(words[g.next_u64() % 15]) + (i + 1 < n ? " " : ".\n");
  }
  std::filesystem::create_directories(dir);
  const std::filesystem::path p = dir / "corpus.txt";
  std::ofstream(p) << text;
  return p;
}

// Global batch 8 (splits over 1, 2, 4 ranks and 4 micro-batches), several gradient buckets.
inline train::Config tiny_gpt_job(const std::filesystem::path& corpus, int64_t steps = 20) {
  const std::string toml = fmt::format(R"(
[model]
kind = "gpt"
n_layer = 2
n_head = 2
n_embd = 32
context = 16
vocab_size = 256
[data]
kind = "text"
path = "{}"
val_fraction = 0.1
[optim]
lr = 3e-3
min_lr = 3e-4
warmup_steps = 2
schedule = "cosine"
grad_clip = 1.0
[train]
steps = {}
batch_size = 8
micro_batches = 1
seq_len = 16
precision = "f32"
seed = 11
eval_every = 0
eval_batches = 2
log_every = 100
sample_every = 0
threads = 1
[parallel]
bucket_mb = 0.02
)",
                                       corpus.string(), steps);
  return train::parse_config(toml, "tiny_gpt_job.toml");
}

}  // namespace tessera::testing
