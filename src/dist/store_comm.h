// The host control plane of a torchrun-style GPU job, over rank 0's TCP store (tcp_store.h):
// what the NCCL communicator needs from its bootstrap communicator (all_gather_bytes for the
// unique id, the config consistency check and scalars; split) and a barrier. It moves no
// tensors: the tensor collectives throw an Error saying so (the NCCL communicator built over
// this one carries them).
//
// Collectives: every rank of the communicator calls them in the same order (as with MPI); call
// n of all_gather_bytes is rank r's key "<prefix>ag/<n>/<r>". Keys of call n - 1 are erased by
// rank 0 once every rank has reached call n (so everyone has read them). Ranks that do not
// arrive at the rendezvous within StoreOptions::timeout_s, or whose process ends while others
// wait for them in a collective, are named in the Error of the ranks waiting.
//
// Liveness: from the end of the rendezvous every rank beats on its own connection
// (store_heartbeat.h, unless StoreOptions::heartbeat_s < 0); a rank suspended or gone is named
// by the others within timeout_s, and they exit, wherever their training threads are blocked
// (inside an NCCL collective, typically).
#pragma once
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "dist/tcp_store.h"

namespace tessera::dist {

class StoreCommunicator final : public Communicator {
 public:
  // Collective over the launch's ranks: rank 0 starts the server (bound to opt.host), every rank
  // connects and waits until all have arrived; throws an Error naming the ranks that never
  // arrived within opt.timeout_s.
  StoreCommunicator(StoreOptions opt, int rank);
  // rank 0 keeps its server up until every rank has said goodbye (or the timeout), so that no
  // rank loses the store while reading the last values.
  ~StoreCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return int(members_.size()); }
  std::string backend() const override { return "store"; }
  // "store: rank 0's store at 127.0.0.1:29500, rank 1 of 2"
  std::string describe() const override;

  WorkHandle all_reduce_async(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter_async(Tensor in, Tensor out, std::vector<int64_t> counts,
                                  ReduceOp op) override;
  WorkHandle all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) override;
  WorkHandle broadcast_async(Tensor t, int root) override;
  // Not supported (the store carries no tensors): an Error naming the call and the peer.
  WorkHandle send_async(Tensor t, int peer) override;
  WorkHandle recv_async(Tensor t, int peer) override;
  // Complete when it returns (every rank has reached it).
  WorkHandle barrier_async() override;
  std::vector<std::string> all_gather_bytes(const std::string& mine) override;
  std::unique_ptr<Communicator> split(int color, int key) override;

 private:
  struct Shared;  // the connection (and rank 0's server), shared by split communicators
  StoreCommunicator(std::shared_ptr<Shared> shared, std::string prefix, std::vector<int> members,
                    int rank);
  // Waits for keys (one per member, in member order); throws naming the missing members: at the
  // rendezvous after timeout_s; later as soon as a missing member's connection has closed, or
  // after collective_timeout_s.
  void wait_members(const std::vector<std::string>& keys, const std::string& what, bool rendezvous);

  std::shared_ptr<Shared> shared_;
  std::string prefix_;        // keys of this communicator start with it
  std::vector<int> members_;  // launch ranks, in this communicator's rank order
  int rank_;
  uint64_t calls_ = 0, splits_ = 0;
};

}  // namespace tessera::dist
