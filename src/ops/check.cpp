#include "ops/check.h"

#include <string>

#include "core/backend.h"
#include "ops/dispatch.h"

namespace tessera::ops {

void check_defined(const char* op, const char* arg, const Tensor& t) {
  TS_CHECK(t.defined(), "{}: argument '{}' is an undefined tensor", op, arg);
}

void check_cpu(const char* op, const Tensor& t) {
  TS_CHECK(t.device().is_cpu(), "{}: tensor {} is on {}, expected cpu (no kernel for {})", op,
           t.desc(), t.device().str(), t.device().str());
}

Device common_device(const char* op, std::initializer_list<NamedInput> inputs) {
  const NamedInput* first = nullptr;
  for (const NamedInput& in : inputs) {
    if (!in.tensor.defined()) continue;
    if (!first) {
      first = &in;
      continue;
    }
    TS_CHECK(in.tensor.device() == first->tensor.device(),
             "{}: inputs on different devices: '{}' {} is on {}, '{}' {} is on {} (move them to "
             "one device with .to(device))",
             op, first->name, first->tensor.desc(), first->tensor.device().str(), in.name,
             in.tensor.desc(), in.tensor.device().str());
  }
  return first ? first->tensor.device() : Device::cpu();
}

const kernels::OpKernels& device_kernels(const char* op, Device d) {
  const DeviceBackend& backend = backend_for(d, op);  // names the op when d has no backend
  TS_CHECK(backend.ops,
           "{}: the backend of {} has no op kernels; the op does not fall back to the host: move "
           "the inputs to the cpu",
           op, d.str());
  return *backend.ops;
}

void check_dtype(const char* op, const char* arg, const Tensor& t, DType expected) {
  check_defined(op, arg, t);
  TS_CHECK(t.dtype() == expected, "{}: '{}' is {}, expected dtype {}", op, arg, t.desc(),
           dtype_name(expected));
}

void check_float(const char* op, const char* arg, const Tensor& t) {
  check_defined(op, arg, t);
  TS_CHECK(is_floating(t.dtype()), "{}: '{}' is {}, expected a float dtype (f32, bf16, f16)", op,
           arg, t.desc());
}

void check_ndim(const char* op, const char* arg, const Tensor& t, int ndim) {
  check_defined(op, arg, t);
  TS_CHECK(t.ndim() == ndim, "{}: '{}' is {}, expected {} dims", op, arg, t.desc(), ndim);
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  TS_CHECK(a.shape() == b.shape(), "{}: shapes differ: {} and {}", op, a.desc(), b.desc());
}

void check_suffix_shape(const char* op, const Tensor& a, const Tensor& b) {
  bool ok = b.ndim() <= a.ndim();
  for (int i = 0; ok && i < b.ndim(); ++i) ok = b.shape()[i] == a.shape()[a.ndim() - b.ndim() + i];
  TS_CHECK(ok, "{}: cannot broadcast {} to {}: expected the same shape or a's trailing dims", op,
           b.desc(), a.desc());
}

int64_t count_checked_targets(const char* op, const Tensor& host_targets, int64_t classes,
                              const char* classes_name, int32_t ignore_index,
                              const std::string& where) {
  const int32_t* t = host_targets.data<int32_t>();
  int64_t count = 0;
  for (int64_t r = 0; r < host_targets.numel(); ++r) {
    TS_CHECK(t[r] == ignore_index || (t[r] >= 0 && t[r] < classes),
             "{}: target {} at targets{} is out of range{}: expected 0 <= target < {} ({}) or "
             "ignore_index {}",
             op, t[r], index_str(host_targets.shape(), r), where, classes, classes_name,
             ignore_index);
    count += t[r] != ignore_index;
  }
  return count;
}

std::string index_str(const Shape& shape, int64_t i) {
  std::vector<int64_t> idx(size_t(shape.ndim()));
  for (int d = shape.ndim() - 1; d >= 0; --d) {
    idx[size_t(d)] = i % shape[d];
    i /= shape[d];
  }
  return Shape(idx).str();
}

}  // namespace tessera::ops
