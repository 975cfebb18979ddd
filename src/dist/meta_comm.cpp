#include "dist/meta_comm.h"

#include <algorithm>
#include <atomic>
#include <map>

#include <fmt/format.h>

#include "core/error.h"
#include "core/meta_device.h"
#include "dist/clock.h"

namespace tessera::dist {
namespace {

std::atomic<int64_t> g_next_work{1};

// Complete at once; waiting on it is what the trace needs to know.
class MetaWork final : public Work {
 public:
  explicit MetaWork(int64_t id) : id_(id), time_(monotonic_seconds()) {}
  void wait() override {
    meta::Event e;
    e.kind = meta::EventKind::wait;
    e.work = id_;
    meta::record(std::move(e));
  }
  bool done() const override { return true; }
  double start_time() const override { return time_; }
  double end_time() const override { return time_; }

 private:
  int64_t id_;
  double time_;
};

}  // namespace

MetaCommunicator::MetaCommunicator(int rank, int world) : index_(rank), world_(world) {
  TS_CHECK(world >= 1 && rank >= 0 && rank < world, "MetaCommunicator: rank {} of {} ranks", rank,
           world);
  members_.resize(size_t(world));
  for (int r = 0; r < world; ++r) members_[size_t(r)] = r;
}

MetaCommunicator::MetaCommunicator(std::vector<int> members, int index, int world)
    : members_(std::move(members)), index_(index), world_(world) {}

std::string MetaCommunicator::describe() const {
  return fmt::format("meta: rank {} of {} simulated (nothing is sent)", members_[size_t(index_)],
                     world_);
}

WorkHandle MetaCommunicator::started(const char* op, const Tensor& t, int peer) {
  meta::Event e;
  e.kind = meta::EventKind::collective;
  meta::CollectiveEvent& c = e.collective;
  c.op = op;
  c.bytes = t.defined() ? double(t.nbytes()) : 0;
  c.group.size = world_size();
  c.group.first = members_.front();
  c.group.stride = members_.size() > 1 ? members_[1] - members_[0] : 1;
  c.group.world = world_;
  c.peer = peer >= 0 ? members_[size_t(peer)] : -1;
  c.work = g_next_work.fetch_add(1);
  const int64_t id = c.work;
  meta::record(std::move(e));
  return std::make_shared<MetaWork>(id);
}

WorkHandle MetaCommunicator::all_reduce_async(Tensor t, ReduceOp) {
  check_collective_tensor("all_reduce: t", t, /*cpu_only=*/false);
  return started("all_reduce", t);
}

WorkHandle MetaCommunicator::reduce_scatter_async(Tensor in, Tensor out,
                                                  std::vector<int64_t> counts, ReduceOp) {
  TS_CHECK(int(counts.size()) == world_size() && out.numel() == counts[size_t(index_)],
           "reduce_scatter: {} counts for {} ranks; out {}", counts.size(), world_size(),
           out.desc());
  return started("reduce_scatter", in);
}

WorkHandle MetaCommunicator::all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) {
  TS_CHECK(int(counts.size()) == world_size() && in.numel() == counts[size_t(index_)],
           "all_gather: {} counts for {} ranks; in {}", counts.size(), world_size(), in.desc());
  return started("all_gather", out);
}

WorkHandle MetaCommunicator::broadcast_async(Tensor t, int) {
  return started("broadcast", t);
}

WorkHandle MetaCommunicator::barrier_async() {
  return started("barrier", Tensor());
}

WorkHandle MetaCommunicator::send_async(Tensor t, int peer) {
  check_p2p("send", t, peer, rank(), world_size(), /*cpu_only=*/false);
  return started("send", t, peer);
}

WorkHandle MetaCommunicator::recv_async(Tensor t, int peer) {
  check_p2p("recv", t, peer, rank(), world_size(), /*cpu_only=*/false);
  return started("recv", t, peer);
}

std::vector<std::string> MetaCommunicator::all_gather_bytes(const std::string& mine) {
  return std::vector<std::string>(size_t(world_size()), mine);
}

std::unique_ptr<Communicator> MetaCommunicator::split(int, int) {
  fail(
      "MetaCommunicator::split: a simulated rank cannot ask its peers for their colors; call "
      "split_by with every rank's (color, key)");
}

std::unique_ptr<Communicator> MetaCommunicator::split_by(const SplitRule& rule) {
  const std::pair<int, int> mine = rule(index_);
  // The members of this group with my color, ordered by (key, rank here).
  std::vector<std::pair<int, int>> chosen;  // (key, rank here)
  for (int r = 0; r < world_size(); ++r) {
    const auto [color, key] = rule(r);
    if (color == mine.first) chosen.emplace_back(key, r);
  }
  std::sort(chosen.begin(), chosen.end());
  std::vector<int> members;
  int index = -1;
  for (const auto& [key, r] : chosen) {
    if (r == index_) index = int(members.size());
    members.push_back(members_[size_t(r)]);
  }
  TS_ASSERT(index >= 0);
  return std::unique_ptr<Communicator>(new MetaCommunicator(std::move(members), index, world_));
}

}  // namespace tessera::dist
