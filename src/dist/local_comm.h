// The single-process communicator: world size 1, rank 0. Every collective is complete when it
// returns (reductions over one rank are the identity; gathers and scatters copy when `in` and
// `out` differ). Training on one process goes through it, so the trainer has one code path.
//
// Tensors may be on any device (the CPU or a GPU): a one-rank collective moves no data between
// processes, so there is nothing backend-specific to do. A copy goes through Tensor::copy_from,
// which on a GPU is queued on the current stream; the handle reports it complete at once, and
// later work on that stream sees the copied values (stream order), as with NCCL's wait().
#pragma once
#include "dist/communicator.h"

namespace tessera::dist {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  std::string describe() const override;

  WorkHandle all_reduce_async(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter_async(Tensor in, Tensor out, std::vector<int64_t> counts,
                                  ReduceOp op) override;
  WorkHandle all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) override;
  WorkHandle broadcast_async(Tensor t, int root) override;
  WorkHandle barrier_async() override;
  // One rank has no peer: both throw an Error naming the call, the peer and the tensor.
  WorkHandle send_async(Tensor t, int peer) override;
  WorkHandle recv_async(Tensor t, int peer) override;
  std::vector<std::string> all_gather_bytes(const std::string& mine) override;
  std::unique_ptr<Communicator> split(int color, int key) override;
};

}  // namespace tessera::dist
