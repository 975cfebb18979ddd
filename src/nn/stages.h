// A model's forward in stages, for ZeRO-3 (dist/zero.h): which parameters each stage uses, and
// the hooks a staged forward calls at each stage's boundaries. They live with the models, which
// declare their stages; the data-parallel engine (a layer above) implements the hooks.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace tessera::nn {

// `units`: disjoint groups of parameters (e.g. the embeddings, each block, the final norm).
// `stages`: the forward in order, as the units each stage uses; a unit may serve several stages,
// like a tied embedding in the first and the last.
struct ParameterUnits {
  std::vector<std::vector<Tensor>> units;
  std::vector<std::vector<int>> stages;
};

// What a staged forward calls around stage k:
//   hooks.enter(k);  x = ...stage k...;  x = hooks.exit(k, x);
// enter() makes the stage's parameters usable; exit() may free them and mark x so that its
// backward brings them back (see dist::ParameterGather).
class StageHooks {
 public:
  virtual ~StageHooks() = default;
  virtual void enter(int stage) = 0;
  virtual Tensor exit(int stage, const Tensor& x) = 0;
};

}  // namespace tessera::nn
