#include "train/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "autograd/grad_mode.h"

namespace tessera::train {

std::string generate_text(const nn::GPT& model, const std::string& prompt, const SampleOptions& opt,
                          Generator& g) {
  const int64_t V = model.config().vocab_size, ctx = model.config().context;
  TS_CHECK(V == 256,
           "generate: the model's vocabulary is {}, expected 256 (byte-level): "
           "Tessera has no tokenizer for other vocabularies yet",
           V);
  TS_CHECK(opt.temperature >= 0 && opt.top_k >= 0,
           "generate: temperature {} and top_k {} must be non-negative", opt.temperature,
           opt.top_k);
  NoGradGuard no_grad;
  std::vector<int32_t> ids;
  for (unsigned char c : prompt) ids.push_back(c);
  if (ids.empty()) ids.push_back('\n');  // condition on a line start
  std::string out;
  std::vector<float> p(static_cast<size_t>(V));
  const Device dev = model.wte.weight.device();
  for (int64_t t = 0; t < opt.tokens; ++t) {
    const int64_t n = std::min<int64_t>(int64_t(ids.size()), ctx);
    std::vector<int32_t> window(ids.end() - n, ids.end());
    Tensor logits = model.forward(Tensor::from_ints(window, Shape{1, n}).to(dev));
    // Only the last position's row is read; on a GPU only it comes back.
    Tensor row = logits.view(Shape{n, V}).slice_rows(n - 1, n);
    if (!row.device().is_cpu()) row = row.to(Device::cpu());
    const float* last = row.data<float>();
    int next;
    if (opt.temperature == 0) {
      next = int(std::max_element(last, last + V) - last);
    } else {
      // Keep the top-k logits, softmax at the temperature, draw one.
      std::vector<int> order(static_cast<size_t>(V));
      std::iota(order.begin(), order.end(), 0);
      const int k = opt.top_k > 0 && opt.top_k < V ? opt.top_k : int(V);
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int a, int b) { return last[a] > last[b]; });
      const float mx = last[order[0]];
      double total = 0;
      for (int i = 0; i < k; ++i)
        total += p[size_t(i)] = std::exp((last[order[i]] - mx) / opt.temperature);
      double u = g.next_double() * total;
      next = order[size_t(k - 1)];
      for (int i = 0; i < k; ++i) {
        if ((u -= p[size_t(i)]) <= 0) {
          next = order[size_t(i)];
          break;
        }
      }
    }
    ids.push_back(next);
    out.push_back(char(next));
  }
  return out;
}

}  // namespace tessera::train
