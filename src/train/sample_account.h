// Sample accounting: which training samples a run consumed, as two 64-bit digests in the
// metrics (docs/CHECKPOINTS.md, "Sample accounting").
//
//   samples_hash      the step's global batch: the sum over its samples of a hash of the
//                     sample's id (a token window's start offset, an image's dataset index)
//   samples_hash_run  every step so far: the sum over steps and samples of a hash of (step, id)
//
// Sums, not a chained hash: addition does not care which rank or micro-batch held a row, so
// both digests are the same for 1, 2 or 4 ranks and any train.micro_batches, and ranks combine
// theirs by adding. A resumed run continues the run digest from its checkpoint and must reach
// the uninterrupted run's value at every later step: a sample drawn twice or skipped changes it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tessera::dist {
class Communicator;
}

namespace tessera::train {

class SampleAccount {
 public:
  // `comm` null or of one rank: no collective.
  SampleAccount(dist::Communicator* comm, int rank) : comm_(comm), rank_(rank) {}

  // This rank's rows of step `step`'s batch (Task::sample_ids).
  void add(int64_t step, const std::vector<int64_t>& ids);

  struct Digests {
    uint64_t step = 0;
    std::optional<uint64_t> run;  // unknown after resuming from a checkpoint without one
  };
  // Collective: the sums over every rank.
  Digests global() const;

  // Resuming: the checkpoint's run digest (global), carried by rank 0 so the sum stays right;
  // nullopt when the checkpoint predates sample accounting.
  void resume(std::optional<uint64_t> run);

 private:
  dist::Communicator* comm_;
  int rank_;
  uint64_t step_ = 0, run_ = 0;  // this rank's share
  bool run_known_ = true;
};

// "0x" and 16 hex digits: JSON readers keep every bit of a string, not of a 64-bit number.
std::string digest_hex(uint64_t d);

}  // namespace tessera::train
