// FlatParameters: every trainable parameter's values in one contiguous f32 buffer and every
// gradient in another, so that optimizers, gradient clipping, loss unscaling and (later)
// all-reduce buckets and ZeRO shards work on two flat arrays instead of a list of tensors.
//
// Construction moves each parameter into the flat value buffer by re-pointing its TensorImpl
// (storage and offset), so every handle a module holds sees the flat storage. Each parameter's
// .grad becomes a view of the flat gradient buffer; autograd adds into an existing .grad in
// place, so backward writes straight into the flat buffer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera {

// Where one parameter lives in the flat buffers (offsets and sizes in elements).
struct ParamSegment {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // start, a multiple of FlatParameters::kAlignElems
  int64_t numel = 0;
};

class FlatParameters {
 public:
  // Each parameter start is padded to 64 bytes (a cache line, an AVX-512 vector).
  static constexpr int64_t kAlignElems = 16;

  // params: distinct f32 leaves with requires_grad, contiguous, all on one device (the flat
  // buffers live there: cpu, or cuda after Module::to). Their values are copied in; a gradient
  // they already hold is copied into the flat gradient buffer, else it starts at 0.
  explicit FlatParameters(std::vector<Tensor> params);
  FlatParameters(const FlatParameters&) = delete;
  FlatParameters& operator=(const FlatParameters&) = delete;

  size_t size() const { return params_.size(); }
  const std::vector<Tensor>& params() const { return params_; }
  const Tensor& param(size_t i) const { return params_.at(i); }
  const std::vector<ParamSegment>& segments() const { return segments_; }
  // Index of the parameter with this name, or -1.
  int64_t find(const std::string& name) const;

  // Elements in each flat buffer, padding included (padding is always zero).
  int64_t numel() const { return numel_; }
  // Elements that belong to parameters (padding excluded).
  int64_t param_numel() const;

  // 1-D tensors over the whole buffers (padding included), sharing their storage.
  Tensor values() const { return values_; }
  Tensor grads() const { return grads_; }
  // Host pointers to the buffers: an Error when they live on a device (code that reads them on
  // the CPU must not get a device pointer). value_ptr / grad_ptr are the pointers on device().
  float* value_data() const { return host_ptr(values_, "value_data"); }
  float* grad_data() const { return host_ptr(grads_, "grad_data"); }
  float* value_ptr() const { return values_.data<float>(); }
  float* grad_ptr() const { return grads_.data<float>(); }
  Device device() const { return values_.device(); }
  // The flat-buffer view that parameter i's .grad should be.
  Tensor grad_view(size_t i) const { return Tensor(grad_views_.at(i)); }

  // Zeroes the gradient buffer and re-attaches every parameter's .grad to its view (it may have
  // been dropped by Tensor::zero_grad()).
  void zero_grad();
  // Makes the flat gradient buffer hold every parameter's current gradient before it is read:
  // a gradient that autograd created elsewhere (after Tensor::zero_grad() on a parameter) is
  // copied in, a missing one becomes zeros, and .grad is re-attached to its view. A pointer
  // comparison per parameter when nothing was detached. Optimizers, clipping and unscaling
  // call it; call it before reading grad_data() directly.
  void sync_grads();

 private:
  static float* host_ptr(const Tensor& buffer, const char* what);

  std::vector<Tensor> params_;
  std::vector<ParamSegment> segments_;
  std::vector<std::shared_ptr<TensorImpl>> grad_views_;
  int64_t numel_ = 0;
  Tensor values_;
  Tensor grads_;
};

}  // namespace tessera
