// A tensor's shape: up to kMaxDims sizes, stored inline (no allocation).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace tessera {

constexpr int kMaxDims = 5;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int ndim() const { return ndim_; }
  int64_t operator[](int i) const { return d_[i]; }
  int64_t& operator[](int i) { return d_[i]; }
  // Size of dim i; negative i counts from the end.
  int64_t dim(int i) const;
  int64_t numel() const;
  // Product of all dims but the last: the number of "rows" for row-wise kernels.
  int64_t rows() const { return ndim_ ? numel() / d_[ndim_ - 1] : 1; }
  int64_t last() const { return ndim_ ? d_[ndim_ - 1] : 1; }
  std::vector<int64_t> vec() const { return {d_.begin(), d_.begin() + ndim_}; }
  std::string str() const;  // "[2, 3, 4]"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> d_{};
};

}  // namespace tessera
