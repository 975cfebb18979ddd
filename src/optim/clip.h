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

// Multiplies every gradient by `factor` (on the gradients' device).
void scale_grads(FlatParameters& params, float factor);

// For gradients that hold grad_scale x the true gradient (fp16 loss scaling): returns the true
// norm and, when it is finite, divides the gradients by grad_scale and clips them to max_norm
// (max_norm 0: no clipping) in one pass. A non-finite norm (an inf/NaN gradient) is returned
// and nothing is touched: the caller skips the step.
double unscale_and_clip(FlatParameters& params, double max_norm, float grad_scale);

}  // namespace tessera
