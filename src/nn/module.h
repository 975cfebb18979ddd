// Module: the base of every layer and model. A module owns named parameters (f32 leaf tensors
// that require grad) and child modules, and knows whether it is training (dropout on) or
// evaluating.
//
// Order: parameters() lists tensors depth-first in registration order: a module's entries (its
// own parameters and its children, interleaved as they were registered) in the order the
// constructor registered them, each child expanded in place. Models register in the order of
// their Hugging Face state dicts, so GPT lists wte, wpe, h.0.ln_1.weight, ... , ln_f.bias.
// Optimizers, flat gradient buffers and checkpoints rely on this order being stable.
//
// Names: registering a parameter names its tensor ("weight"); registering a child prefixes the
// names of all the child's tensors ("c_attn.weight" -> "attn.c_attn.weight"), so once the
// outermost module is built every tensor's name() is its full hierarchical name.
//
// Modules are neither copyable nor movable: parents hold pointers to children that live in
// their own members. Build models in place or behind a unique_ptr.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tessera::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // All parameters, depth-first in registration order (see above).
  std::vector<Tensor> parameters() const;
  // The same list with full names ("h.0.attn.c_attn.weight").
  NamedTensors named_parameters() const;
  // Total number of parameter elements.
  int64_t num_parameters() const;

  // Training mode (dropout active) or evaluation mode; applies to the whole subtree.
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // Clears every parameter's .grad.
  void zero_grad();

  // Moves every parameter (and a gradient it holds) to `device` in place: each parameter's
  // TensorImpl is re-pointed at the copy, so every handle the model holds (tied weights
  // included) sees it. Call before building FlatParameters and the optimizer.
  void to(Device device);

 protected:
  // Makes t a parameter: f32, requires grad, named `name` (no dots).
  Tensor& register_parameter(const std::string& name, Tensor& t);
  // Adds child (which must outlive this module's use of it: normally a member) under `name`.
  void register_module(const std::string& name, Module& child);
  // Removes the entry `name` (a parameter or child) from this module's lists; the object itself
  // is the owner's to free. Pipeline parallelism drops what another rank's stages hold.
  void unregister(const std::string& name);

 private:
  struct Entry {
    std::string name;
    Tensor* param = nullptr;  // either a parameter ...
    Module* child = nullptr;  // ... or a child module
  };
  void collect(const std::string& prefix, NamedTensors* out) const;
  void prefix_names(const std::string& prefix);
  bool has_entry(const std::string& name) const;

  std::vector<Entry> entries_;
  bool training_ = true;
};

}  // namespace tessera::nn
