#include "dist/communicator.h"

#include <cstring>

#include "dist/clock.h"

namespace tessera::dist {
namespace {

class CompletedWork final : public Work {
 public:
  CompletedWork() : t_(monotonic_seconds()) {}
  void wait() override {}
  bool done() const override { return true; }
  double start_time() const override { return t_; }
  double end_time() const override { return t_; }

 private:
  double t_;
};

}  // namespace

WorkHandle completed_work() {
  return std::make_shared<CompletedWork>();
}

ShardLayout::ShardLayout(int64_t n, int world, int64_t align) {
  TS_CHECK(n >= 0 && world >= 1 && align >= 1,
           "ShardLayout: {} elements over {} ranks aligned to {}: expected n >= 0, world >= 1, "
           "align >= 1",
           n, world, align);
  bounds.resize(size_t(world) + 1);
  for (int r = 0; r < world; ++r) {
    const int64_t even = n * r / world;
    bounds[size_t(r)] = std::min(n, (even + align - 1) / align * align);
  }
  bounds[size_t(world)] = n;
}

std::vector<int64_t> ShardLayout::counts_in(int64_t a, int64_t b) const {
  TS_CHECK(0 <= a && a <= b && b <= bounds.back(),
           "ShardLayout: range [{}, {}) outside the buffer of {} elements", a, b, bounds.back());
  std::vector<int64_t> counts(static_cast<size_t>(world()));
  for (int r = 0; r < world(); ++r)
    counts[size_t(r)] = std::max<int64_t>(0, std::min(b, end(r)) - std::max(a, begin(r)));
  return counts;
}

void check_collective_tensor(const char* what, const Tensor& t, bool cpu_only) {
  TS_CHECK(t.defined(), "{} is undefined", what);
  TS_CHECK(t.dtype() == DType::f32, "{} is {}, expected f32", what, t.desc());
  TS_CHECK(t.is_contiguous(), "{} ({}) is not contiguous", what, t.desc());
  TS_CHECK(!cpu_only || t.device().is_cpu(), "{} ({}) is on {}, expected cpu", what, t.desc(),
           t.device().str());
}

std::vector<double> Communicator::all_gather_f64(double mine) {
  std::string bytes(sizeof(double), '\0');
  std::memcpy(bytes.data(), &mine, sizeof(double));
  std::vector<std::string> all = all_gather_bytes(bytes);
  std::vector<double> out(all.size());
  for (size_t r = 0; r < all.size(); ++r) {
    TS_CHECK(all[r].size() == sizeof(double), "all_gather_f64: rank {} sent {} bytes, expected {}",
             r, all[r].size(), sizeof(double));
    std::memcpy(&out[r], all[r].data(), sizeof(double));
  }
  return out;
}

double Communicator::sum_f64(double mine) {
  if (world_size() == 1) return mine;
  double s = 0;
  for (double v : all_gather_f64(mine)) s += v;
  return s;
}

}  // namespace tessera::dist
