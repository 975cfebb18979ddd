#include "core/tensor.h"

#include <cmath>
#include <cstring>

#include "autograd/engine.h"
#include "core/allocator.h"
#include "core/backend.h"
#include "core/meta_device.h"
#include "core/rng.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/strided_copy.h"

namespace tessera {

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) {
  // A device's allocator serves its current device: select it first (core/backend.h).
  if (!d.is_cpu()) backend_for(d, "Tensor::empty").activate(d.index);
  data = allocator_for(d).allocate(n);
}
Storage::~Storage() {
  allocator_for(device).release(data, nbytes);
}

std::array<int64_t, kMaxDims> contiguous_strides(const Shape& s) {
  std::array<int64_t, kMaxDims> st{};
  int64_t acc = 1;
  for (int i = s.ndim() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  // meta::BuildOnMeta: where a real run would build, the host. Planning for this CPU, the host's
  // memory is the planned device's.
  if (device.is_cpu() && meta::building_on_meta())
    device = meta::plays_cuda() ? Device::meta(meta::kHostIndex) : Device::meta();
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape.numel()) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (!t.device().is_cpu()) {  // (meta::BuildOnMeta may have put it on the meta device)
    backend_for(t.device(), "Tensor::zeros").memset(t.raw_data(), 0, t.nbytes());
    return t;
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::memset(t.nbytes()));
  std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape, DType dtype) {
  TS_CHECK(int64_t(v.size()) == shape.numel(), "Tensor::from_vector: {} values for shape {}",
           v.size(), shape.str());
  Tensor t = empty(shape, dtype);
  if (t.device().is_meta()) return t;  // meta::BuildOnMeta: the shape only
  cpu::cast(v.data(), DType::f32, t.raw_data(), dtype, shape.numel());
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& v, const Shape& shape) {
  TS_CHECK(int64_t(v.size()) == shape.numel(), "Tensor::from_vector: {} values for shape {}",
           v.size(), shape.str());
  Tensor t = empty(shape, DType::i32);
  if (t.device().is_meta()) return t;
  std::memcpy(t.raw_data(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& g, float mean, float std, DType dtype) {
  const int64_t n = shape.numel();
  Tensor f = empty(shape, DType::f32);
  const uint64_t seed = g.seed(), base = g.advance(uint64_t(n + 1) / 2 * 2);
  if (f.device().is_meta()) return f.to(dtype);  // meta::BuildOnMeta: the draw is skipped
  float* p = f.data<float>();
  // Box-Muller on pairs; each pair depends only on its index, so the fill is thread-invariant.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < (n + 1) / 2; ++i) {
    float u1 = Generator::uniform01(seed, base + 2 * i);
    float u2 = Generator::uniform01(seed, base + 2 * i + 1);
    float r = std::sqrt(-2.f * std::log(1.f - u1));  // 1 - u1 in (0, 1]
    float th = 6.2831853071795864f * u2;
    p[2 * i] = mean + std * r * std::cos(th);
    if (2 * i + 1 < n) p[2 * i + 1] = mean + std * r * std::sin(th);
  }
  return dtype == DType::f32 ? f : f.to(dtype);
}

Tensor Tensor::rand(const Shape& shape, Generator& g, float lo, float hi, DType dtype) {
  const int64_t n = shape.numel();
  Tensor f = empty(shape, DType::f32);
  const uint64_t seed = g.seed(), base = g.advance(uint64_t(n));
  if (f.device().is_meta()) return f.to(dtype);
  float* p = f.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = lo + (hi - lo) * Generator::uniform01(seed, base + i);
  return dtype == DType::f32 ? f : f.to(dtype);
}

bool Tensor::is_contiguous() const {
  auto st = contiguous_strides(shape());
  for (int i = 0; i < ndim(); ++i)
    if (shape()[i] != 1 && impl().strides[i] != st[i]) return false;
  return true;
}

std::string Tensor::desc() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape().str();
}

Tensor Tensor::view(const Shape& s) const {
  TS_CHECK(s.numel() == numel(), "view: cannot view {} as {}", desc(), s.str());
  TS_CHECK(is_contiguous(), "view: tensor {} is not contiguous", desc());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = s;
  impl->strides = contiguous_strides(s);
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  TS_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= dim(0),
           "slice_rows: [{}, {}) out of range for {}", begin, end, desc());
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->requires_grad = false;
  impl->grad.reset();
  impl->grad_fn.reset();
  impl->grad_ready_hooks.clear();
  impl->offset += begin * impl_->strides[0];
  impl->shape[0] = end - begin;
  return Tensor(std::move(impl));
}

Tensor Tensor::transpose_view(int a, int b) const {
  a = a < 0 ? a + ndim() : a;
  b = b < 0 ? b + ndim() : b;
  TS_CHECK(a >= 0 && a < ndim() && b >= 0 && b < ndim(), "transpose: dims ({}, {}) for {}", a, b,
           desc());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = shape();
  impl->strides = impl_->strides;
  impl->dtype = dtype();
  std::swap(impl->shape[a], impl->shape[b]);
  std::swap(impl->strides[a], impl->strides[b]);
  return Tensor(std::move(impl));
}

namespace {
// Copies a strided tensor (any dtype, same element size) into contiguous memory: one backend
// call for the whole view (a single kernel on a GPU), the CPU's copy directly on the host.
void strided_copy(const Tensor& src, void* dst) {
  const size_t es = dtype_size(src.dtype());
  const Shape& s = src.shape();
  StridedLayout v;
  v.ndim = s.ndim();
  for (int d = 0; d < s.ndim(); ++d) v.sizes[d] = s[d], v.strides[d] = src.stride(d);
  if (!src.device().is_cpu()) {
    backend_for(src.device(), "contiguous").strided_copy(src.raw_data(), dst, v, es);
    return;
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::strided_copy(s.numel(), es));
  cpu::strided_copy(src.raw_data(), dst, v, es);
}
}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype(), device());
  strided_copy(*this, out.raw_data());
  return out;
}

Tensor Tensor::clone() const {
  Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), device());
  if (!device().is_cpu()) {
    backend_for(device(), "clone").copy(out.raw_data(), src.raw_data(), nbytes());
    return out;
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::copy(nbytes()));
  std::memcpy(out.raw_data(), src.raw_data(), nbytes());
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape(), t, device());
  if (!device().is_cpu()) {
    backend_for(device(), "to(dtype)").cast(src.raw_data(), dtype(), out.raw_data(), t, numel());
    return out;
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::cast(numel(), dtype(), t));
  cpu::cast(src.raw_data(), dtype(), out.raw_data(), t, numel());
  return out;
}

void keep_host_mirror(const Tensor& on_device, const Tensor& host) {
  if (is_floating(host.dtype()) || host.nbytes() == 0) return;
  Storage& dst = *on_device.impl().storage;
  TS_CHECK(on_device.is_contiguous() && on_device.impl().offset == 0 && host.is_contiguous() &&
               host.nbytes() == dst.nbytes,
           "internal error: keep_host_mirror: {} is not the whole of its storage",
           on_device.desc());
  auto mirror = std::make_shared<Storage>(dst.nbytes, Device::cpu());
  std::memcpy(mirror->data, host.raw_data(), dst.nbytes);
  dst.host_mirror = std::move(mirror);
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  if (d.is_meta() && device().is_meta()) {  // the host stand-in to the planned device: an upload
    Tensor out = empty(shape(), dtype(), d);
    backend_for(d, "to(device)").copy_from_host(out.raw_data(), raw_data(), nbytes());
    return out;
  }
  // The copy is the device side's (the host has no backend).
  const DeviceBackend& b = backend_for(d.is_cpu() ? device() : d, "to(device)");
  TS_CHECK(d.is_cpu() || device().is_cpu(),
           "to(device): {} from {} to {}: copies between two devices are not implemented", desc(),
           device().str(), d.str());
  if (d.is_cpu() && impl().storage->host_mirror) {  // ids uploaded from the host: no wait
    auto view = std::make_shared<TensorImpl>();
    view->storage = std::const_pointer_cast<Storage>(impl().storage->host_mirror);
    view->offset = impl().offset;
    view->shape = impl().shape;
    view->strides = impl().strides;
    view->dtype = impl().dtype;
    return Tensor(std::move(view)).clone();  // a copy: the caller may write its result
  }
  Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), d);
  if (d.is_cpu()) {
    // Synchronous (the stream is drained): a host result is readable on return.
    b.copy_to_host(out.raw_data(), src.raw_data(), nbytes());
    b.synchronize();
  } else {
    // No wait: the copy takes the source's bytes before it returns (pageable memory is staged),
    // so the caller may reuse or free it at once, and kernels queued later see the data.
    b.copy_from_host(out.raw_data(), src.raw_data(), nbytes());
    keep_host_mirror(out, src);
  }
  return out;
}

std::vector<float> Tensor::to_vector() const {
  if (!device().is_cpu()) return to(Device::cpu()).to_vector();
  Tensor src = contiguous();
  std::vector<float> v(static_cast<size_t>(numel()));
  cpu::cast(src.raw_data(), dtype(), v.data(), DType::f32, numel());
  return v;
}

float Tensor::item() const {
  TS_CHECK(numel() == 1, "item(): tensor {} has {} elements, expected 1", desc(), numel());
  return to_vector()[0];
}

void Tensor::fill_(double value) {
  TS_CHECK(is_contiguous(), "fill_: tensor {} is not contiguous", desc());
  if (!device().is_cpu()) {
    backend_for(device(), "fill_").fill(raw_data(), dtype(), value, numel());
    return;
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::fill(numel(), dtype()));
  cpu::fill(raw_data(), dtype(), value, numel());
}

void Tensor::copy_from(const Tensor& src) {
  TS_CHECK(src.shape() == shape(), "copy_from: source {} into {}", src.desc(), desc());
  TS_CHECK(is_contiguous(), "copy_from: destination {} is not contiguous", desc());
  // Across devices: move the source over first (in its own dtype), then convert in place.
  Tensor s = src.device() == device() ? src.contiguous() : src.to(device());
  if (!device().is_cpu()) {
    const DeviceBackend& b = backend_for(device(), "copy_from");
    if (s.dtype() == dtype())
      b.copy(raw_data(), s.raw_data(), nbytes());
    else
      b.cast(s.raw_data(), s.dtype(), raw_data(), dtype(), numel());
    return;
  }
  meta::kernel_runs(Device::cpu(), s.dtype() == dtype()
                                       ? meta::table_cost::copy(nbytes())
                                       : meta::table_cost::cast(numel(), s.dtype(), dtype()));
  cpu::cast(s.raw_data(), s.dtype(), raw_data(), dtype(), numel());
}

Tensor& Tensor::set_requires_grad(bool r) {
  TS_CHECK(!r || is_floating(dtype()), "set_requires_grad: tensor {} is not floating point",
           desc());
  impl().requires_grad = r;
  return *this;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

void Tensor::backward(const Tensor& grad) const {
  autograd::backward(*this, grad);
}

}  // namespace tessera
