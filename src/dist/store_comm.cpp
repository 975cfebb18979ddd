#include "dist/store_comm.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>
#include <tuple>

#include "core/error.h"
#include "dist/clock.h"
#include "dist/store_heartbeat.h"

namespace tessera::dist {
namespace {

[[noreturn]] void no_tensors(const char* op) {
  fail(
      "store communicator: {} of tensors is not supported: the store carries only the host "
      "control plane of a torchrun-style GPU job (the NCCL communicator moves tensors; CPU "
      "ranks need MPI: mpirun or srun --mpi=pmix)",
      op);
}

std::string join_ranks(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i)
    s += (i == 0 ? "" : i + 1 == ranks.size() ? " and " : ", ") + std::to_string(ranks[i]);
  return s;
}

}  // namespace

struct StoreCommunicator::Shared {
  std::unique_ptr<TcpStoreServer> server;  // rank 0 only
  std::unique_ptr<TcpStoreClient> client;
  std::unique_ptr<StoreHeartbeat> heartbeat;  // from the end of the rendezvous
};

StoreCommunicator::StoreCommunicator(StoreOptions opt, int rank) : rank_(rank) {
  TS_CHECK(rank >= 0 && rank < opt.world_size, "store: rank {} outside [0, {})", rank,
           opt.world_size);
  shared_ = std::make_shared<Shared>();
  if (rank == 0) {
    shared_->server = std::make_unique<TcpStoreServer>(opt);
    if (opt.port == 0) opt.port = shared_->server->port();
  }
  shared_->client = std::make_unique<TcpStoreClient>(opt, rank);
  for (int r = 0; r < opt.world_size; ++r) members_.push_back(r);
  // The rendezvous: every rank says it is here and waits for the others.
  std::vector<std::string> keys;
  for (int r : members_) keys.push_back(fmt::format("arrived/{}", r));
  shared_->client->set(keys[size_t(rank)], "");
  try {
    wait_members(keys, "never arrived", /*rendezvous=*/true);
  } catch (const Error&) {
    // The ranks that did arrive time out at about the same moment: rank 0 keeps its store up
    // until they have left (or 5 s) so that they get the same diagnosis, not "lost the store".
    const double until = monotonic_seconds() + 5;
    while (rank == 0 && monotonic_seconds() < until &&
           shared_->server->connected_ranks().size() > 1)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    throw;
  }
  if (opt.heartbeat_s >= 0) shared_->heartbeat = std::make_unique<StoreHeartbeat>(opt, rank);
}

StoreCommunicator::StoreCommunicator(std::shared_ptr<Shared> shared, std::string prefix,
                                     std::vector<int> members, int rank)
    : shared_(std::move(shared)),
      prefix_(std::move(prefix)),
      members_(std::move(members)),
      rank_(rank) {}

StoreCommunicator::~StoreCommunicator() {
  if (!prefix_.empty() || !shared_->client) return;  // a split part; the world one says goodbye
  // Unwinding after a failure: leave at once, so that the others see this rank (or rank 0's
  // store) gone instead of waiting for its goodbye.
  if (std::uncaught_exceptions() > 0) return;
  // The others stop watching this rank first: it may end before they do.
  if (shared_->heartbeat) shared_->heartbeat->leave();
  try {
    TcpStoreClient& c = *shared_->client;
    c.add("goodbye", 1);
    if (shared_->server) {
      // Each rank's goodbye comes after its last read on its connection.
      const double deadline = monotonic_seconds() + c.options().timeout_s;
      while (c.add("goodbye", 0) < int64_t(members_.size()) && monotonic_seconds() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (const std::exception&) {
    // The store is gone (rank 0 exited first, or this rank is unwinding after a failure).
  }
}

std::string StoreCommunicator::describe() const {
  return fmt::format("store: {}, rank {} of {}", shared_->client->where(), rank_, world_size());
}

void StoreCommunicator::wait_members(const std::vector<std::string>& keys, const std::string& what,
                                     bool rendezvous) {
  TcpStoreClient& c = *shared_->client;
  const double timeout = rendezvous ? c.options().timeout_s : c.options().collective_timeout_s;
  const double deadline = monotonic_seconds() + timeout;
  auto ranks_of = [&](const std::vector<std::string>& missing) {
    std::vector<int> ranks;
    for (size_t i = 0; i < keys.size(); ++i)
      if (std::find(missing.begin(), missing.end(), keys[i]) != missing.end())
        ranks.push_back(members_[i]);
    return ranks;
  };
  auto rank_list = [&](const std::vector<int>& ranks) {
    return fmt::format("{} {} of {}", ranks.size() == 1 ? "rank" : "ranks", join_ranks(ranks),
                       c.options().world_size);
  };
  for (;;) {
    // In slices, so that a rank whose process ended (its connection closed) is named at once.
    const double slice = rendezvous ? timeout : std::min(1.0, deadline - monotonic_seconds());
    const std::vector<std::string> missing = c.wait(keys, std::max(slice, 0.0));
    if (missing.empty()) return;
    const std::vector<int> ranks = ranks_of(missing);
    if (!rendezvous) {
      const std::set<int> connected = c.connected_ranks();
      std::vector<int> gone;
      for (int r : ranks)
        if (!connected.count(r)) gone.push_back(r);
      if (!gone.empty())
        fail("{}: {} left (the connection to the store closed) before {} (rank {} waited)",
             c.where(), rank_list(gone), what, members_[size_t(rank_)]);
    }
    if (rendezvous)
      fail("{}: {} {} within {} s (rank {} waited)", c.where(), rank_list(ranks), what, timeout,
           members_[size_t(rank_)]);
    if (monotonic_seconds() >= deadline)
      fail(
          "{}: {} did not reach {} within {} s (rank {} waited), connected and beating: {} "
          "training thread is stuck (an endless loop, a deadlock, or work longer than the "
          "timeout: parallel.stuck_timeout_s)",
          c.where(), rank_list(ranks), what, timeout, members_[size_t(rank_)],
          ranks.size() == 1 ? "its" : "their");
  }
}

std::vector<std::string> StoreCommunicator::all_gather_bytes(const std::string& mine) {
  TcpStoreClient& c = *shared_->client;
  const uint64_t n = calls_++;
  auto key = [&](uint64_t call, size_t r) { return fmt::format("{}ag/{}/{}", prefix_, call, r); };
  c.set(key(n, size_t(rank_)), mine);
  std::vector<std::string> keys;
  for (size_t r = 0; r < members_.size(); ++r) keys.push_back(key(n, r));
  wait_members(keys, fmt::format("all_gather_bytes #{}", n), /*rendezvous=*/false);
  std::vector<std::string> out;
  for (const std::string& k : keys) out.push_back(c.get(k));
  // Every member set its key of call n after reading all of call n - 1.
  if (rank_ == 0 && n > 0)
    for (size_t r = 0; r < members_.size(); ++r) c.erase(key(n - 1, r));
  return out;
}

WorkHandle StoreCommunicator::barrier_async() {
  (void)all_gather_bytes("");
  return completed_work();
}

std::unique_ptr<Communicator> StoreCommunicator::split(int color, int key) {
  std::string mine(3 * sizeof(int), '\0');
  const int parts[3] = {color, key, members_[size_t(rank_)]};
  std::memcpy(mine.data(), parts, sizeof parts);
  const std::vector<std::string> all = all_gather_bytes(mine);
  std::vector<std::tuple<int, int, int>> group;  // (key, this comm's rank, launch rank)
  for (size_t r = 0; r < all.size(); ++r) {
    int p[3];
    std::memcpy(p, all[r].data(), sizeof p);
    if (p[0] == color) group.emplace_back(p[1], int(r), p[2]);
  }
  std::sort(group.begin(), group.end());
  std::vector<int> members;
  int my_rank = -1;
  for (const auto& [k, r, launch_rank] : group) {
    if (r == rank_) my_rank = int(members.size());
    members.push_back(launch_rank);
  }
  const std::string prefix = fmt::format("{}split/{}/{}/", prefix_, splits_++, color);
  return std::unique_ptr<Communicator>(
      new StoreCommunicator(shared_, prefix, std::move(members), my_rank));
}

WorkHandle StoreCommunicator::all_reduce_async(Tensor, ReduceOp) {
  no_tensors("all_reduce");
}
WorkHandle StoreCommunicator::reduce_scatter_async(Tensor, Tensor, std::vector<int64_t>, ReduceOp) {
  no_tensors("reduce_scatter");
}
WorkHandle StoreCommunicator::all_gather_async(Tensor, Tensor, std::vector<int64_t>) {
  no_tensors("all_gather");
}
WorkHandle StoreCommunicator::broadcast_async(Tensor, int) {
  no_tensors("broadcast");
}

WorkHandle StoreCommunicator::send_async(Tensor, int peer) {
  no_tensors(fmt::format("send (to peer {})", peer).c_str());
}
WorkHandle StoreCommunicator::recv_async(Tensor, int peer) {
  no_tensors(fmt::format("recv (from peer {})", peer).c_str());
}

}  // namespace tessera::dist
