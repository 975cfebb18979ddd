// The backward pass and the helper every op uses to record itself.
#pragma once
#include <initializer_list>
#include <string>

#include "autograd/grad_mode.h"
#include "autograd/node.h"

namespace tessera::autograd {

// Makes `out` the result of a recorded op when grad mode is on and any input requires grad.
// `fn` maps the gradient of `out` to the gradients of `inputs` (same order).
Tensor record(Tensor out, const char* name, std::initializer_list<Tensor> inputs, BackwardFn fn);
// True when an op with these inputs would be recorded (lets ops skip saving for backward).
bool needs_grad(std::initializer_list<Tensor> inputs);

// Runs reverse-mode differentiation from root. Gradients reach leaves' .grad (accumulated,
// f32); each leaf's grad-ready hooks fire as soon as no pending node can add to it.
void backward(const Tensor& root, const Tensor& grad_root);

}  // namespace tessera::autograd
