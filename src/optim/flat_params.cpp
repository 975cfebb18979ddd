#include "optim/flat_params.h"

#include <cstring>
#include <unordered_map>

#include "autograd/node.h"
#include "core/meta_device.h"

namespace tessera {

namespace {

int64_t round_up(int64_t n, int64_t m) {
  return (n + m - 1) / m * m;
}

std::string label(const Tensor& p, size_t i) {
  return p.name().empty() ? fmt::format("#{}", i) : fmt::format("'{}'", p.name());
}

// A TensorImpl over `storage` at `offset`, contiguous, with no autograd state.
std::shared_ptr<TensorImpl> view_of(const std::shared_ptr<Storage>& storage, int64_t offset,
                                    const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage;
  impl->offset = offset;
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = DType::f32;
  return impl;
}

void check_param(const Tensor& p, size_t i) {
  TS_CHECK(p.defined(), "FlatParameters: parameter #{} is undefined", i);
  const std::string who = label(p, i);
  TS_CHECK(p.dtype() == DType::f32,
           "FlatParameters: parameter {} is {}, expected f32 (master weights are f32)", who,
           p.desc());
  TS_CHECK(p.requires_grad(), "FlatParameters: parameter {} ({}) does not require grad", who,
           p.desc());
  TS_CHECK(p.is_leaf(), "FlatParameters: parameter {} ({}) is not a leaf (made by op '{}')", who,
           p.desc(), p.is_leaf() ? "" : p.grad_fn()->name());
  TS_CHECK(p.is_contiguous(), "FlatParameters: parameter {} ({}) is not contiguous", who, p.desc());
}

}  // namespace

FlatParameters::FlatParameters(std::vector<Tensor> params) : params_(std::move(params)) {
  TS_CHECK(!params_.empty(), "FlatParameters: empty parameter list");

  // Each parameter must own its storage: re-pointing one of two tensors that share storage
  // would silently untie them.
  std::unordered_map<const Storage*, size_t> owner;
  int64_t end = 0;
  const Device device = params_[0].defined() ? params_[0].device() : Device::cpu();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    check_param(p, i);
    TS_CHECK(p.device() == device,
             "FlatParameters: parameter {} is on {} but {} is on {}: expected one device (move "
             "the model with Module::to first)",
             label(p, i), p.device().str(), label(params_[0], 0), device.str());
    auto [it, fresh] = owner.try_emplace(p.impl().storage.get(), i);
    TS_CHECK(fresh,
             "FlatParameters: parameters {} and {} share storage (the same tensor twice, or "
             "views of one buffer); pass a tied parameter once",
             label(params_[it->second], it->second), label(p, i));
    ParamSegment s{p.name(), p.shape(), round_up(end, kAlignElems), p.numel()};
    end = s.offset + s.numel;
    segments_.push_back(std::move(s));
  }
  numel_ = round_up(end, kAlignElems);
  values_ = Tensor::zeros(Shape{numel_}, DType::f32, device);
  grads_ = Tensor::zeros(Shape{numel_}, DType::f32, device);

  for (size_t i = 0; i < params_.size(); ++i) {
    TensorImpl& impl = params_[i].impl();
    const ParamSegment& s = segments_[i];
    if (device.is_cpu())
      std::memcpy(value_data() + s.offset, params_[i].raw_data(), size_t(s.numel) * sizeof(float));
    else  // same device: a device-to-device copy
      Tensor(view_of(values_.impl().storage, s.offset, s.shape)).copy_from(params_[i]);
    impl.storage = values_.impl().storage;
    impl.offset = s.offset;
    impl.strides = contiguous_strides(s.shape);
    grad_views_.push_back(view_of(grads_.impl().storage, s.offset, s.shape));
  }
  sync_grads();  // adopts gradients the parameters already had
}

int64_t FlatParameters::find(const std::string& name) const {
  for (size_t i = 0; i < segments_.size(); ++i)
    if (segments_[i].name == name) return int64_t(i);
  return -1;
}

int64_t FlatParameters::param_numel() const {
  int64_t n = 0;
  for (const ParamSegment& s : segments_) n += s.numel;
  return n;
}

float* FlatParameters::host_ptr(const Tensor& buffer, const char* what) {
  TS_CHECK(buffer.device().is_cpu(),
           "FlatParameters::{}: the flat buffers are on {}; this returns a host pointer (use "
           "{}() for the device pointer, or copy with .to(Device::cpu()))",
           what, buffer.device().str(), what[0] == 'v' ? "value_ptr" : "grad_ptr");
  return buffer.data<float>();
}

void FlatParameters::zero_grad() {
  if (device().is_cpu()) {
    // Recorded as the fill the device path runs, so a CPU trace and a plan name it alike.
    meta::kernel_runs(Device::cpu(), meta::table_cost::fill(numel_, DType::f32));
    std::memset(grad_data(), 0, size_t(numel_) * sizeof(float));
  } else {
    grads_.fill_(0.0);
  }
  for (size_t i = 0; i < params_.size(); ++i) params_[i].impl().grad = grad_views_[i];
}

void FlatParameters::sync_grads() {
  for (size_t i = 0; i < params_.size(); ++i) {
    std::shared_ptr<TensorImpl>& g = params_[i].impl().grad;
    if (g == grad_views_[i]) continue;
    Tensor view(grad_views_[i]);
    if (g) {
      Tensor src(g);
      TS_CHECK(src.shape() == view.shape(),
               "FlatParameters: gradient {} of parameter {} does not match its shape {}",
               src.desc(), label(params_[i], i), view.shape().str());
      view.copy_from(src);
    } else {
      view.fill_(0.0);
    }
    g = grad_views_[i];
  }
}

}  // namespace tessera
