#include "ops/rope_table.h"

#include <cmath>
#include <deque>
#include <memory>
#include <mutex>
#include <numbers>
#include <utility>

#include "core/error.h"

namespace tessera::ops {

std::vector<double> rope_inverse_frequencies(int64_t head_size, double theta) {
  TS_CHECK(head_size > 0 && head_size % 2 == 0,
           "rope_inverse_frequencies: head_size = {}, expected an even head size > 0", head_size);
  TS_CHECK(theta > 0, "rope_inverse_frequencies: theta = {}, expected > 0", theta);
  std::vector<double> f(size_t(head_size / 2));
  for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(theta, -double(2 * i) / double(head_size));
  return f;
}

std::vector<double> llama3_scale_frequencies(std::vector<double> inv_freq,
                                             const Llama3RopeScaling& s) {
  TS_CHECK(s.factor > 0 && s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor &&
               s.original_max_position_embeddings > 0,
           "llama3_scale_frequencies: factor = {}, low_freq_factor = {}, high_freq_factor = {}, "
           "original_max_position_embeddings = {}: expected all > 0 and high_freq_factor > "
           "low_freq_factor",
           s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings);
  const double context = s.original_max_position_embeddings;
  const double low_freq_wavelen = context / s.low_freq_factor;    // longer: scaled down
  const double high_freq_wavelen = context / s.high_freq_factor;  // shorter: kept
  for (double& f : inv_freq) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < high_freq_wavelen) continue;
    if (wavelen > low_freq_wavelen) {
      f /= s.factor;
      continue;
    }
    const double smooth =
        (context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    f = (1 - smooth) * f / s.factor + smooth * f;
  }
  return inv_freq;
}

namespace {

std::vector<float> compute_table(const std::vector<double>& inv_freq, int64_t positions) {
  const auto n = int64_t(inv_freq.size());
  std::vector<float> t(size_t(positions * 2 * n));
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < n; ++i) {
      const double angle = double(p) * inv_freq[size_t(i)];
      t[size_t((p * 2) * n + i)] = float(std::cos(angle));
      t[size_t((p * 2 + 1) * n + i)] = float(std::sin(angle));
    }
  return t;
}

// The values of the last few tables built. A plan's search builds the same model hundreds of
// times (one meta run per layout and pipeline stage), and a long context's table is millions of
// cos / sin in double precision: most of the search's time before this cache. The values only:
// each call still returns a tensor of its own, allocated as before (the planner's memory books
// see it as a real run's).
std::shared_ptr<const std::vector<float>> cached_table(const std::vector<double>& inv_freq,
                                                       int64_t positions) {
  using Key = std::pair<int64_t, std::vector<double>>;
  static std::mutex mu;
  static std::deque<std::pair<Key, std::shared_ptr<const std::vector<float>>>> recent;
  constexpr size_t kKept = 4;
  Key key{positions, inv_freq};
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& [k, table] : recent)
      if (k == key) return table;
  }
  auto table = std::make_shared<const std::vector<float>>(compute_table(inv_freq, positions));
  std::lock_guard<std::mutex> lock(mu);
  recent.emplace_front(std::move(key), table);
  if (recent.size() > kKept) recent.pop_back();
  return table;
}

}  // namespace

Tensor rope_table(const std::vector<double>& inv_freq, int64_t positions, Device device) {
  TS_CHECK(positions >= 0 && !inv_freq.empty(),
           "rope_table: {} positions, {} frequencies: expected positions >= 0 and frequencies",
           positions, inv_freq.size());
  const auto n = int64_t(inv_freq.size());
  Tensor table = Tensor::from_vector(*cached_table(inv_freq, positions), Shape{positions, 2, n});
  return device.is_cpu() ? table : table.to(device);
}

Tensor rope_table(int64_t positions, int64_t head_size, double theta,
                  const std::optional<Llama3RopeScaling>& scaling, Device device) {
  std::vector<double> f = rope_inverse_frequencies(head_size, theta);
  if (scaling) f = llama3_scale_frequencies(std::move(f), *scaling);
  return rope_table(f, positions, device);
}

}  // namespace tessera::ops
