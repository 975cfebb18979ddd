// Generation with a key/value cache: the cached forward gives the logits of the full forward
// (GPT-2 with learned positions, Llama with rotary ones and grouped-query attention), greedy
// generation equals re-running the whole sequence for every token, and the sampler's top-k /
// top-p / temperature do what they say.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "autograd/grad_mode.h"
#include "gradcheck.h"
#include "nn/gpt.h"
#include "nn/llama.h"
#include "tokenizer/tokenizer.h"
#include "train/generate.h"

using namespace tessera;
using tessera::testing::expect_error;

namespace {

std::unique_ptr<nn::Decoder> tiny_model(bool llama, uint64_t seed) {
  Generator g(seed);
  if (!llama) {
    nn::GPTConfig c;
    c.n_layer = 2, c.n_head = 4, c.n_embd = 32, c.context = 24, c.vocab_size = 50;
    return std::make_unique<nn::GPT>(c, g);
  }
  nn::LlamaConfig l;
  l.n_layer = 2, l.n_head = 4, l.n_kv_head = 2, l.n_embd = 32, l.ffn_hidden = 48, l.context = 24;
  l.vocab_size = 50, l.rope_scaling = ops::Llama3RopeScaling{4.0, 1.0, 4.0, 8.0};
  return std::make_unique<nn::Decoder>(nn::llama_decoder_config(l), g);
}

std::vector<int32_t> random_ids(int64_t n, int32_t vocab, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(int32_t(g.next_u64() % uint64_t(vocab)));
  return ids;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace

TEST(Generate, CachedForwardGivesTheFullForwardsLogits) {
  for (bool llama : {false, true}) {
    SCOPED_TRACE(llama ? "llama" : "gpt");
    auto model = tiny_model(llama, 3);
    NoGradGuard no_grad;
    const int64_t B = 2, T = 20, V = 50;
    const std::vector<int32_t> ids = random_ids(B * T, int32_t(V), 7);
    const std::vector<float> full = model->forward(Tensor::from_ints(ids, Shape{B, T})).to_vector();
    // A prompt of 7, then chunks of 1, 1, 5, 6 through the cache.
    nn::KVCache cache = model->make_cache(B, 24, Device::cpu());
    int64_t at = 0;
    for (int64_t n : {7, 1, 1, 5, 6}) {
      std::vector<int32_t> chunk;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = at; t < at + n; ++t) chunk.push_back(ids[size_t(b * T + t)]);
      const std::vector<float> part =
          model->forward_cached(Tensor::from_ints(chunk, Shape{B, n}), cache).to_vector();
      std::vector<float> want;
      for (int64_t b = 0; b < B; ++b)
        want.insert(want.end(), full.begin() + (b * T + at) * V,
                    full.begin() + (b * T + at + n) * V);
      EXPECT_LT(max_abs_diff(part, want), 1e-5) << "positions " << at << " .. " << at + n - 1;
      at += n;
    }
    EXPECT_EQ(cache.length, T);
    // Past the capacity: a clear error, the cache untouched.
    expect_error(
        [&] {
          model->forward_cached(Tensor::from_ints(random_ids(2 * 5, 50, 1), Shape{2, 5}), cache);
        },
        {"forward_cached", "overflow the cache's 24"});
  }
}

TEST(Generate, GreedyWithTheCacheEqualsRerunningTheSequence) {
  for (bool llama : {false, true}) {
    SCOPED_TRACE(llama ? "llama" : "gpt");
    auto model = tiny_model(llama, 5);
    model->eval();
    train::SampleOptions opt;
    opt.temperature = 0, opt.tokens = 40;  // beyond the context of 24: the cache restarts
    Generator g(1);
    const std::vector<int32_t> prompt = random_ids(5, 50, 9);
    const std::vector<int32_t> got = train::generate(*model, prompt, opt, g);
    ASSERT_EQ(got.size(), 40u);
    // The reference: the whole window through the plain forward for every token, the window
    // being what the cache holds (it restarts from the last context / 2 tokens when full).
    NoGradGuard no_grad;
    std::vector<int32_t> seq = prompt;
    int64_t window_start = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (int64_t(seq.size()) - window_start > 24) window_start = int64_t(seq.size()) - 12;
      std::vector<int32_t> w(seq.begin() + window_start, seq.end());
      const int64_t n = int64_t(w.size());
      const std::vector<float> logits =
          model->forward(Tensor::from_ints(w, Shape{1, n})).to_vector();
      const float* last = logits.data() + (n - 1) * 50;
      const int32_t want = int32_t(std::max_element(last, last + 50) - last);
      ASSERT_EQ(got[i], want) << "token " << i;
      seq.push_back(want);
    }
  }
}

TEST(Generate, SamplerTopKTopPAndTemperature) {
  const float logits[4] = {0.f, std::log(3.f), -1.f, -30.f};
  Generator g(11);
  train::SampleOptions opt;
  opt.temperature = 0;
  EXPECT_EQ(train::sample_token(logits, 4, opt, g), 1);
  opt.temperature = 1, opt.top_k = 1;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(train::sample_token(logits, 4, opt, g), 1);
  opt.top_k = 0, opt.top_p = 0.5f;  // token 1 alone holds more than half the mass
  for (int i = 0; i < 20; ++i) EXPECT_EQ(train::sample_token(logits, 4, opt, g), 1);
  // Top-2 at temperature 1: P(1) = 3/4 exactly.
  opt.top_k = 2, opt.top_p = 1;
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int32_t t = train::sample_token(logits, 4, opt, g);
    ASSERT_TRUE(t == 0 || t == 1);
    ones += t == 1;
  }
  EXPECT_NEAR(double(ones) / n, 0.75, 0.015);
  // top_p = 0.9 over the whole vocabulary keeps tokens 1 and 0 (0.72 + 0.24 reaches 0.9).
  opt.top_k = 0, opt.top_p = 0.9f;
  for (int i = 0; i < 200; ++i) {
    const int32_t t = train::sample_token(logits, 4, opt, g);
    EXPECT_TRUE(t == 0 || t == 1) << t;
  }
  opt.top_p = 0;
  expect_error([&] { train::sample_token(logits, 4, opt, g); }, {"top_p 0", "(0, 1]"});
}

TEST(Generate, TextThroughATokenizer) {
  const std::string path = std::string(TESSERA_SOURCE_DIR) + "/tests/data/hf_bpe_kjv.json";
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(path);
  Generator g(4);
  nn::GPTConfig c;
  c.n_layer = 1, c.n_head = 2, c.n_embd = 16, c.context = 32, c.vocab_size = tok.vocab_size();
  nn::GPT model(c, g);
  train::SampleOptions opt;
  opt.tokens = 10, opt.top_k = 5;
  Generator s1(2), s2(2);
  const std::string text = train::generate_text(model, "In the beginning", opt, s1, &tok);
  // The text is what the 10 sampled tokens decode to: the same draws, through generate().
  std::vector<int32_t> prompt;
  for (uint32_t id : tok.encode("In the beginning")) prompt.push_back(int32_t(id));
  std::vector<uint32_t> ids;
  for (int32_t id : train::generate(model, prompt, opt, s2)) ids.push_back(uint32_t(id));
  EXPECT_EQ(text, tok.decode(ids));
  EXPECT_FALSE(text.empty());
  // A model whose vocabulary is smaller than the tokenizer's is refused.
  c.vocab_size = 100;
  nn::GPT small(c, g);
  expect_error([&] { train::generate_text(small, "x", opt, s1, &tok); },
               {"tokenizer has 2048 tokens", "vocabulary of 100"});
}

TEST(Generate, DataTokenizerIsLoadedFromTheConfigAndMustFitTheVocabulary) {
  train::Config cfg;
  EXPECT_EQ(train::load_data_tokenizer(cfg), nullptr);  // data.tokenizer = "": none
  cfg.data.tokenizer = std::string(TESSERA_SOURCE_DIR) + "/tests/data/hf_bpe_kjv.json";
  cfg.model.vocab_size = 2048;
  ASSERT_NE(train::load_data_tokenizer(cfg), nullptr);
  EXPECT_EQ(train::load_data_tokenizer(cfg)->vocab_size(), 2048u);
  cfg.model.vocab_size = 256;
  expect_error([&] { train::load_data_tokenizer(cfg); },
               {"data.tokenizer", "hf_bpe_kjv.json", "2048 tokens", "model.vocab_size = 256"});
  cfg.data.tokenizer = "/nonexistent/tokenizer.json";
  expect_error([&] { train::load_data_tokenizer(cfg); },
               {"data.tokenizer = '/nonexistent/tokenizer.json'"});
}
