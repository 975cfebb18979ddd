#include "core/shape.h"

#include "core/error.h"

namespace tessera {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  TS_CHECK(dims.size() <= size_t(kMaxDims), "Shape: at most {} dims, got {}", kMaxDims,
           dims.size());
  ndim_ = int(dims.size());
  for (int i = 0; i < ndim_; ++i) {
    TS_CHECK(dims[i] >= 0, "Shape: dim {} is negative ({})", i, dims[i]);
    d_[i] = dims[i];
  }
}

int64_t Shape::dim(int i) const {
  int j = i < 0 ? i + ndim_ : i;
  TS_CHECK(j >= 0 && j < ndim_, "Shape{}: dim index {} out of range", str(), i);
  return d_[j];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= d_[i];
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim_; ++i) {
    if (i) s += ", ";
    s += std::to_string(d_[i]);
  }
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (ndim_ != o.ndim_) return false;
  for (int i = 0; i < ndim_; ++i)
    if (d_[i] != o.d_[i]) return false;
  return true;
}

}  // namespace tessera
