// The planner's communicator: one rank of a job that does not exist. It simulates rank `rank`
// of `world` ranks on the meta device (core/meta_device.h): every collective and transfer is
// recorded into the active meta::Trace with its size, its group and, later, where its handle is
// waited on, and completes at once without moving anything (meta tensors have no contents).
// Its groups are known without asking the peers: split_by evaluates every member's (color, key).
// The control plane answers as if every rank had sent this rank's bytes (the start-up checks
// compare identical configs).
#pragma once
#include <memory>
#include <vector>

#include "dist/communicator.h"

namespace tessera::dist {

class MetaCommunicator final : public Communicator {
 public:
  // Rank `rank` of a job of `world` ranks (the world communicator).
  MetaCommunicator(int rank, int world);

  int rank() const override { return index_; }
  int world_size() const override { return int(members_.size()); }
  std::string backend() const override { return "meta"; }
  std::string describe() const override;

  WorkHandle all_reduce_async(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter_async(Tensor in, Tensor out, std::vector<int64_t> counts,
                                  ReduceOp op) override;
  WorkHandle all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) override;
  WorkHandle broadcast_async(Tensor t, int root) override;
  WorkHandle barrier_async() override;
  WorkHandle send_async(Tensor t, int peer) override;
  WorkHandle recv_async(Tensor t, int peer) override;
  std::vector<std::string> all_gather_bytes(const std::string& mine) override;
  // split needs every member's color and key: only split_by works here.
  std::unique_ptr<Communicator> split(int color, int key) override;
  std::unique_ptr<Communicator> split_by(const SplitRule& rule) override;

 private:
  MetaCommunicator(std::vector<int> members, int index, int world);
  WorkHandle started(const char* op, const Tensor& t, int peer = -1);

  std::vector<int> members_;  // the job ranks of this group, by rank here
  int index_ = 0;             // this rank's place in members_
  int world_ = 1;             // the job's ranks
};

}  // namespace tessera::dist
