// Tensor: a typed, shaped view of shared storage, plus the autograd fields that make it a
// node in the tape. Tensors are cheap handles (a shared_ptr); copying one aliases the data.
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/shape.h"

namespace tessera {

class Node;  // autograd/node.h
class Generator;

// Owns one allocation from a device's caching allocator.
struct Storage {
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  // Integer storage copied to a device from the host (token, position and target ids) keeps a
  // host copy of its bytes: reading the ids back (range checks, the embedding's grouping) then
  // needs no wait for the device. Only integer storage gets one: kernels update floating-point
  // storage in place, while integer device storage is never written after its upload (an op
  // that would write one must drop the mirror first).
  std::shared_ptr<const Storage> host_mirror;
};

class Tensor;
using GradHook = std::function<void(Tensor& grad)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  std::array<int64_t, kMaxDims> strides{};  // in elements
  DType dtype = DType::f32;

  // Autograd.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;        // accumulated gradient of a leaf (f32)
  std::shared_ptr<Node> grad_fn;           // op that produced this tensor (null for leaves)
  std::vector<GradHook> grad_ready_hooks;  // leaves: called once .grad is final in a backward
  std::string name;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories. Contents of empty() are uninitialised.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
    return full(shape, 1.0, dtype, device);
  }
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape,
                            DType dtype = DType::f32);
  static Tensor from_ints(const std::vector<int32_t>& v, const Shape& shape);  // i32
  // Normal(mean, std) and Uniform[lo, hi) fills drawn from a generator (deterministic).
  static Tensor randn(const Shape& shape, Generator& g, float mean = 0.f, float std = 1.f,
                      DType dtype = DType::f32);
  static Tensor rand(const Shape& shape, Generator& g, float lo = 0.f, float hi = 1.f,
                     DType dtype = DType::f32);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int ndim() const { return impl().shape.ndim(); }
  int64_t dim(int i) const { return impl().shape.dim(i); }
  int64_t numel() const { return impl().shape.numel(); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  bool is_cuda() const { return device().type == DeviceType::cuda; }
  int64_t stride(int i) const { return impl().strides[i < 0 ? i + ndim() : i]; }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  // "f32[2, 3]" for error messages.
  std::string desc() const;

  void* raw_data() const {
    return static_cast<char*>(impl().storage->data) + impl().offset * dtype_size(dtype());
  }
  template <class T>
  T* data() const {
    TS_CHECK(dtype() == dtype_of<T>::value, "data<{}>(): tensor is {}",
             dtype_name(dtype_of<T>::value), desc());
    return static_cast<T*>(raw_data());
  }

  // Views sharing storage (no autograd edge: use ops::reshape etc. inside models).
  Tensor view(const Shape& shape) const;                // requires contiguous
  Tensor slice_rows(int64_t begin, int64_t end) const;  // along dim 0
  Tensor transpose_view(int a, int b) const;
  // A contiguous copy (or this tensor if already contiguous).
  Tensor contiguous() const;
  Tensor clone() const;
  // Converting copy to another dtype (no autograd; ops::cast records one).
  Tensor to(DType dtype) const;
  // A contiguous copy on another device (this tensor when already there), complete on return;
  // no autograd edge. cpu <-> cuda only.
  Tensor to(Device device) const;

  // Host-side conversions for tests and I/O (a CUDA tensor is copied to the host first).
  std::vector<float> to_vector() const;
  float item() const;
  void fill_(double value);
  void copy_from(const Tensor& src);  // same shape; converts dtype; copies across devices

  // Autograd.
  bool requires_grad() const { return impl_ && impl().requires_grad; }
  Tensor& set_requires_grad(bool r = true);
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor detach() const;
  // Registers f to run when this leaf's gradient is final during a backward pass.
  void on_grad_ready(GradHook f) { impl().grad_ready_hooks.push_back(std::move(f)); }
  // Reverse-mode differentiation from this (scalar unless grad is given).
  void backward(const Tensor& grad = Tensor()) const;

  const std::string& name() const { return impl().name; }
  Tensor& set_name(std::string n) {
    impl().name = std::move(n);
    return *this;
  }

  TensorImpl& impl() const {
    TS_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Fills contiguous strides for a shape.
std::array<int64_t, kMaxDims> contiguous_strides(const Shape& s);

// Gives `on_device` (a whole, contiguous storage just copied from `host`) a host copy of the
// bytes when they are integers (Storage::host_mirror); nothing for floating-point data.
void keep_host_mirror(const Tensor& on_device, const Tensor& host);

}  // namespace tessera
