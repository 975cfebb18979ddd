// Evaluation shared by the data-parallel ranks. Batch i of an evaluation runs on data-parallel
// rank i % dp (all ranks of that model replica, its tensor-, context- and pipeline-parallel
// ranks, run it together), and each batch's results then reach every rank, which adds them up
// in batch order. The figures are therefore bit-identical to one rank's for every layout, and
// an evaluation takes 1/dp of the time it took when every rank ran every batch.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "dist/communicator.h"

namespace tessera::train {

struct EvalShare {
  dist::Communicator* group = nullptr;  // the data-parallel ranks; null: this rank runs all
  // Every rank runs as many batches, the last round's spare ranks one whose result they drop:
  // ZeRO-3's forward gathers parameters collectively, once per forward on every rank.
  bool lockstep = false;
  int rank() const { return group ? group->rank() : 0; }
  int size() const { return group ? group->world_size() : 1; }
  bool runs(int64_t batch) const { return batch % size() == rank(); }
};

// results[i] = run(i) for every batch i in [0, batches): each computed on the rank that
// share.runs(i), then exchanged so that every rank holds all of them. Each result has `width`
// values (a loss, or a loss and counts); every rank must call this with the same arguments.
std::vector<std::vector<double>> evaluate_shared(
    const EvalShare& share, int64_t batches, int width,
    const std::function<std::vector<double>(int64_t batch)>& run);

}  // namespace tessera::train
