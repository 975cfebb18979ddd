#include "train/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/grad_mode.h"

namespace tessera::train {

int32_t sample_token(const float* logits, int64_t V, const SampleOptions& opt, Generator& g) {
  TS_CHECK(opt.temperature >= 0 && opt.top_k >= 0 && opt.top_p > 0 && opt.top_p <= 1,
           "generate: temperature {} and top_k {} must be non-negative and top_p {} in (0, 1]",
           opt.temperature, opt.top_k, opt.top_p);
  if (opt.temperature == 0) return int32_t(std::max_element(logits, logits + V) - logits);
  // The k likeliest in order, their probabilities at the temperature, then the nucleus.
  const int64_t k = opt.top_k > 0 && opt.top_k < V ? opt.top_k : V;
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> p(static_cast<size_t>(k));
  double total = 0;
  for (int64_t i = 0; i < k; ++i)
    total += p[size_t(i)] =
        std::exp(double(logits[order[size_t(i)]] - logits[order[0]]) / double(opt.temperature));
  int64_t kept = k;
  if (opt.top_p < 1) {
    double mass = 0;
    for (kept = 0; kept < k && mass < double(opt.top_p) * total;) mass += p[size_t(kept++)];
    total = mass;
  }
  double u = g.next_double() * total;
  for (int64_t i = 0; i < kept; ++i)
    if ((u -= p[size_t(i)]) <= 0) return order[size_t(i)];
  return order[size_t(kept - 1)];
}

std::vector<int32_t> generate(const nn::Decoder& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt, Generator& g) {
  TS_CHECK(!prompt.empty(), "generate: the prompt is empty: expected at least one token");
  const int64_t V = model.decoder_config().vocab_size, ctx = model.decoder_config().context;
  for (int32_t id : prompt)
    TS_CHECK(id >= 0 && id < V, "generate: prompt token {} is outside the vocabulary of {}", id, V);
  NoGradGuard no_grad;
  const Device dev = model.wte.weight.device();
  std::vector<int32_t> ids = prompt, out;
  nn::KVCache cache;
  std::vector<int32_t> feed;  // tokens not yet in the cache
  // A fresh cache fed the last `keep` tokens of ids.
  auto restart = [&](int64_t keep) {
    keep = std::min<int64_t>(int64_t(ids.size()), keep);
    feed.assign(ids.end() - keep, ids.end());
    cache = model.make_cache(1, ctx, dev);
  };
  restart(ctx);
  for (int64_t t = 0; t < opt.tokens; ++t) {
    if (cache.length + int64_t(feed.size()) > ctx) restart(std::max<int64_t>(1, ctx / 2));
    const int64_t n = int64_t(feed.size());
    Tensor logits = model.forward_cached(Tensor::from_ints(feed, Shape{1, n}).to(dev), cache);
    // Only the last position's row is read; on a GPU only it comes back.
    Tensor row = logits.view(Shape{n, V}).slice_rows(n - 1, n);
    if (!row.device().is_cpu()) row = row.to(Device::cpu());
    const int32_t next = sample_token(row.data<float>(), V, opt, g);
    ids.push_back(next);
    out.push_back(next);
    feed.assign(1, next);
  }
  return out;
}

std::unique_ptr<tokenizer::Tokenizer> load_data_tokenizer(const Config& cfg) {
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (cfg.data.tokenizer.empty()) return tok;
  try {
    tok =
        std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(cfg.data.tokenizer));
  } catch (const Error& e) {
    fail("config: data.tokenizer = '{}': {}", cfg.data.tokenizer, e.what());
  }
  TS_CHECK(int64_t(tok->vocab_size()) <= cfg.model.vocab_size,
           "config: data.tokenizer = '{}' has {} tokens: expected at most model.vocab_size = {}",
           cfg.data.tokenizer, tok->vocab_size(), cfg.model.vocab_size);
  return tok;
}

std::string generate_text(const nn::Decoder& model, const std::string& prompt,
                          const SampleOptions& opt, Generator& g, const tokenizer::Tokenizer* tok) {
  if (tok) {
    TS_CHECK(int64_t(tok->vocab_size()) <= model.decoder_config().vocab_size,
             "generate: the tokenizer has {} tokens, more than the model's vocabulary of {}",
             tok->vocab_size(), model.decoder_config().vocab_size);
    std::vector<int32_t> ids;
    for (uint32_t id : tok->encode(prompt, "prompt")) ids.push_back(int32_t(id));
    if (ids.empty())
      for (const char* eot : {"<|endoftext|>", "<|end_of_text|>"})
        if (auto id = tok->added_token_id(eot); id && ids.empty()) ids.push_back(int32_t(*id));
    TS_CHECK(!ids.empty(), "generate: an empty prompt needs an end-of-text token in the tokenizer");
    std::vector<uint32_t> out;
    for (int32_t id : generate(model, ids, opt, g)) out.push_back(uint32_t(id));
    return tok->decode(out);
  }
  TS_CHECK(model.decoder_config().vocab_size == 256,
           "generate: the model's vocabulary is {}, expected 256 (byte-level) for text without a "
           "tokenizer",
           model.decoder_config().vocab_size);
  std::vector<int32_t> ids;
  for (unsigned char c : prompt) ids.push_back(c);
  if (ids.empty()) ids.push_back('\n');  // condition on a line start
  std::string text;
  for (int32_t id : generate(model, ids, opt, g)) text.push_back(char(id));
  return text;
}

}  // namespace tessera::train
