// A node of the autograd tape: one recorded op. It keeps what its backward needs (captured in
// the closure) and one edge per input saying where that input's gradient goes.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera {

// Given the gradient of the op's output, returns one gradient per input (an undefined Tensor
// where an input needs none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

struct Edge {
  std::shared_ptr<Node> node;        // the input came from this op ...
  std::shared_ptr<TensorImpl> leaf;  // ... or is this leaf that wants .grad
  bool active() const { return node || leaf; }
};

class Node {
 public:
  Node(std::string name, std::vector<Edge> inputs, BackwardFn fn);
  const std::string& name() const { return name_; }
  const std::vector<Edge>& inputs() const { return inputs_; }
  // Creation order: backward visits nodes newest first, i.e. in reverse order of the forward.
  uint64_t sequence() const { return seq_; }
  std::vector<Tensor> apply(const Tensor& grad_out) { return fn_(grad_out); }
  // Frees the saved tensors once backward has used them.
  void release() { fn_ = nullptr; }
  bool released() const { return fn_ == nullptr; }

 private:
  std::string name_;
  std::vector<Edge> inputs_;
  BackwardFn fn_;
  uint64_t seq_;
};

}  // namespace tessera
