// Activation recomputation (gradient checkpointing): run a function without keeping what its
// ops would save for backward, and re-run it during backward to get them back.
//
// checkpoint(fn, x, params, generators) computes y = fn(x) with grad recording off, so none of
// fn's intermediate tensors outlive the call, and records ONE node on y that keeps only x. When
// backward reaches that node it
//   1. replays the forward's conditions: the generators' (seed, offset) as they were before the
//      forward (dropout draws the same masks) and the autocast dtype then in force (the trainer's
//      AutocastGuard has gone by the time backward runs);
//   2. re-runs fn on a detached alias of x with grad recording on (a private graph of its own);
//   3. runs a nested backward of that graph with the incoming gradient: the parameters'
//      gradients accumulate into their .grad as a normal backward would put them there, x's
//      gradient is what the node returns.
// The same ops run on the same inputs in the same order, so gradients are bit-identical to those
// of fn without checkpointing.
//
// Parameters. Every leaf fn reads that requires grad must be listed in `params`: the node takes
// an edge to each, so the outer backward counts the checkpoint among their uses and fires their
// grad-ready hooks (DDP / ZeRO gradient buckets) only once every use is done, right after the
// node ran; the nested backward fires none. A parameter fn uses that is not listed, or a tensor
// recorded outside fn that fn reads (its graph would run twice), is an error at backward time.
//
// Works on any device: everything is ops on fn's own tensors. Not re-entrant across threads:
// the generators are replayed in place, so nothing else may draw from them during backward.
#pragma once
#include <functional>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace tessera::autograd {

using CheckpointFn = std::function<Tensor(const Tensor&)>;

// y = fn(x), recomputed in backward (see above). Without grad mode, or when neither x nor any
// parameter requires grad, it is just fn(x). fn must be deterministic given x, the parameters,
// the generators' states and the autocast dtype; it is kept (and must stay callable) until the
// node has run or the graph is dropped. `name` (a literal) names the node in errors.
Tensor checkpoint(const char* name, CheckpointFn fn, const Tensor& x,
                  const std::vector<Tensor>& params,
                  const std::vector<Generator*>& generators = {});

}  // namespace tessera::autograd
