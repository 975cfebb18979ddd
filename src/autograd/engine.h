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

// For an op's backward function: the gradient buffer of leaf t when the op may add t's gradient
// straight into it, else an undefined tensor. That is when t is a leaf that requires grad and
// already holds a contiguous f32 .grad of its shape (a FlatParameters view, or the gradient of
// an earlier backward): the engine would only add into that buffer in place, so the op saves
// the temporary gradient and the pass that adds it. An op that adds into the buffer returns an
// undefined gradient for t; t's grad-ready hooks still fire once every use of t is done.
Tensor leaf_grad_buffer(const Tensor& t);

// dst += src for f32 tensors of n contiguous elements on one device (its backend's kernel; on
// the CPU the host's, costed for a plan's trace): how the engine accumulates gradients, and how
// ZeRO adds a later micro-batch's gradient shard.
void add_into(const Tensor& dst, const Tensor& src, int64_t n);

// Whether a backward pass fires leaves' grad-ready hooks. A nested pass (activation
// recomputation, autograd/checkpoint.h) skips them: it sees only some of a leaf's uses, and the
// outer pass fires them once every use is done.
enum class LeafHooks { fire, skip };

// Runs reverse-mode differentiation from root. Gradients reach leaves' .grad (accumulated,
// f32); each leaf's grad-ready hooks fire as soon as no pending node can add to it. A node's
// backward receives the gradient of its output as its consumer produced it (f32, or e.g. bf16
// from a loss that feeds a bf16 GEMM) when there was one contribution, else their f32 sum.
// Re-entrant: a node's closure may run a backward of its own (over a graph it recorded itself).
void backward(const Tensor& root, const Tensor& grad_root, LeafHooks hooks = LeafHooks::fire);

}  // namespace tessera::autograd
