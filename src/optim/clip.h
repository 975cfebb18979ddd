// Gradient clipping by global L2 norm over the flat gradient buffer.
#pragma once
#include "optim/flat_params.h"

namespace tessera {

// Returns the L2 norm of all gradients (accumulated in f64) before clipping, and scales the
// gradients by max_norm / norm when the norm exceeds max_norm. A non-finite norm is returned
// unchanged and nothing is scaled, so the caller can skip the step.
double clip_grad_norm(FlatParameters& params, double max_norm);

// The global gradient L2 norm alone (f64 accumulation).
double grad_norm(FlatParameters& params);

}  // namespace tessera
