#include "dist/communicator.h"

#include <algorithm>
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

class AllOfWork final : public Work {
 public:
  explicit AllOfWork(std::vector<WorkHandle> works) : works_(std::move(works)) {}
  void wait() override {
    for (const WorkHandle& w : works_) w->wait();
  }
  bool done() const override {
    return std::all_of(works_.begin(), works_.end(), [](const WorkHandle& w) { return w->done(); });
  }
  double start_time() const override {
    double t = works_.front()->start_time();
    for (const WorkHandle& w : works_) t = std::min(t, w->start_time());
    return t;
  }
  double end_time() const override {
    double t = 0;
    for (const WorkHandle& w : works_) {
      if (w->end_time() == 0) return 0;
      t = std::max(t, w->end_time());
    }
    return t;
  }

 private:
  std::vector<WorkHandle> works_;
};

}  // namespace

WorkHandle completed_work() {
  return std::make_shared<CompletedWork>();
}

WorkHandle all_of(std::vector<WorkHandle> works) {
  if (works.empty()) return completed_work();
  if (works.size() == 1) return works.front();
  return std::make_shared<AllOfWork>(std::move(works));
}

std::unique_ptr<Communicator> Communicator::split_by(const SplitRule& rule) {
  const auto [color, key] = rule(rank());
  return split(color, key);
}

WorkHandle Communicator::batch_send_recv_async(std::vector<P2POp> ops) {
  // All checked before any starts: a bad transfer must not leave the batch half started.
  for (const P2POp& op : ops)
    check_p2p(op.kind == P2POp::Kind::send ? "send" : "recv", op.t, op.peer, rank(), world_size(),
              /*cpu_only=*/false);
  std::vector<WorkHandle> works;
  works.reserve(ops.size());
  for (P2POp& op : ops)
    works.push_back(op.kind == P2POp::Kind::send ? send_async(std::move(op.t), op.peer)
                                                 : recv_async(std::move(op.t), op.peer));
  return all_of(std::move(works));
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

void check_p2p(const char* op, const Tensor& t, int peer, int rank, int world, bool cpu_only) {
  const std::string what = fmt::format("{}(peer {}): t", op, peer);
  check_collective_tensor(what.c_str(), t, cpu_only);
  check_p2p_peer(op, t, peer, rank, world);
}

void check_p2p_peer(const char* op, const Tensor& t, int peer, int rank, int world) {
  TS_CHECK(peer >= 0 && peer < world, "{}(peer {}) of {} on rank {}: peer out of range [0, {})", op,
           peer, t.desc(), rank, world);
  TS_CHECK(peer != rank, "{}(peer {}) of {} on rank {}: a rank cannot {} itself", op, peer,
           t.desc(), rank, std::string(op) == "send" ? "send to" : "receive from");
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
