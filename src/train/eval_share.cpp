#include "train/eval_share.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace tessera::train {

std::vector<std::vector<double>> evaluate_shared(
    const EvalShare& share, int64_t batches, int width,
    const std::function<std::vector<double>(int64_t batch)>& run) {
  const int n = share.size(), me = share.rank();
  std::vector<std::vector<double>> results(static_cast<size_t>(batches));
  std::vector<double> mine;  // this rank's batches' results, in batch order
  for (int64_t i = me; i < batches; i += n) {
    results[size_t(i)] = run(i);
    TS_CHECK(int(results[size_t(i)].size()) == width,
             "internal error: evaluation batch {} gave {} values, expected {}", i,
             results[size_t(i)].size(), width);
    mine.insert(mine.end(), results[size_t(i)].begin(), results[size_t(i)].end());
  }
  const int64_t rounds = (batches + n - 1) / n;
  if (share.lockstep && me + (rounds - 1) * n >= batches) run(batches - 1);  // dropped
  if (n == 1) return results;
  std::string bytes(mine.size() * sizeof(double), '\0');
  std::memcpy(bytes.data(), mine.data(), bytes.size());
  const std::vector<std::string> all = share.group->all_gather_bytes(bytes);
  for (int r = 0; r < n; ++r) {
    const int64_t count = r < batches ? (batches - r + n - 1) / n : 0;  // batches r, r + n, ...
    TS_CHECK(all[size_t(r)].size() == size_t(count * width) * sizeof(double),
             "evaluation: rank {} of the data-parallel group sent {} bytes of results, expected "
             "{} (every rank must evaluate the same batches)",
             r, all[size_t(r)].size(), size_t(count * width) * sizeof(double));
    for (int64_t k = 0; k < count; ++k) {
      std::vector<double>& out = results[size_t(r + k * n)];
      out.resize(size_t(width));
      std::memcpy(out.data(), all[size_t(r)].data() + size_t(k * width) * sizeof(double),
                  size_t(width) * sizeof(double));
    }
  }
  return results;
}

}  // namespace tessera::train
