// A tiny GPT training job for the distributed tests (single-process and under mpirun): a small
// generated corpus with learnable structure and an f32 config that trains in milliseconds a step.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/idx.h"
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

// The same job on a tiny Llama: grouped-query attention (4 heads over 2 kv heads), rotary
// positions, SwiGLU, RMSNorm, an untied head (its own ZeRO-3 unit) and block recomputation.
inline train::Config tiny_llama_job(const std::filesystem::path& corpus, int64_t steps = 20) {
  train::Config c = tiny_gpt_job(corpus, steps);
  c.model.kind = "llama";
  c.model.n_head = 4, c.model.n_kv_head = 2, c.model.ffn_hidden = 48;
  c.model.head = "untied";
  c.model.recompute = "blocks";
  train::validate(c, "tiny_llama_job");
  return c;
}

// Random 28x28 images with random labels in Fashion-MNIST's file layout (96 training, 32 test;
// labels gzipped like the real files) in `dir`, for data.kind = "fashion-mnist" jobs.
inline void write_tiny_images(const std::filesystem::path& dir) {
  Generator g(5);
  for (const auto& [prefix, n] : {std::pair<std::string, int64_t>{"train", 96}, {"t10k", 32}}) {
    std::vector<uint8_t> pixels(static_cast<size_t>(n * 28 * 28));
    std::vector<uint8_t> labels(static_cast<size_t>(n));
    const std::vector<float> u = Tensor::rand(Shape{n * 28 * 28 + n}, g).to_vector();
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(u[i] * 255.f);
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = uint8_t(u[pixels.size() + i] * 9.99f);
    data::write_idx((dir / (prefix + "-images-idx3-ubyte")).string(), data::kIdxImagesMagic,
                    {n, 28, 28}, pixels, false);
    data::write_idx((dir / (prefix + "-labels-idx1-ubyte")).string(), data::kIdxLabelsMagic, {n},
                    labels, true);
  }
}

}  // namespace tessera::testing
