// Rows and columns cut out of a tensor and rows joined, as differentiable copies (views share
// storage and are not recorded by autograd): what context parallelism uses to handle its two
// sequence chunks and the key/value part of a fused q|k|v. Every copy goes through
// Tensor::contiguous / copy_from, so the ops run on any device.
#include <algorithm>

#include "autograd/engine.h"
#include "ops/check.h"
#include "ops/ops.h"

namespace tessera::ops {

namespace {

// Zeros of `shape` with rows [a, a + part.dim(0)) set to part (contiguous).
Tensor rows_into_zeros(const Tensor& part, const Shape& shape, int64_t a) {
  Tensor full = Tensor::zeros(shape, part.dtype(), part.device());
  if (part.numel() > 0) full.slice_rows(a, a + part.dim(0)).copy_from(part);
  return full;
}

}  // namespace

Tensor rows(const Tensor& x, int64_t a, int64_t b) {
  check_defined("rows", "x", x);
  TS_CHECK(x.ndim() >= 1 && 0 <= a && a <= b && b <= x.dim(0),
           "rows: [{}, {}) of {}: expected 0 <= a <= b <= {}", a, b, x.desc(),
           x.ndim() ? x.dim(0) : 0);
  Tensor y = x.slice_rows(a, b).contiguous().clone();
  const Shape shape = x.shape();
  return autograd::record(y, "rows", {x}, [shape, a](const Tensor& g) {
    return std::vector<Tensor>{rows_into_zeros(g.contiguous(), shape, a)};
  });
}

Tensor concat_rows(const Tensor& a, const Tensor& b) {
  check_defined("concat_rows", "a", a);
  check_defined("concat_rows", "b", b);
  std::vector<int64_t> da = a.shape().vec(), db = b.shape().vec();
  TS_CHECK(a.dtype() == b.dtype() && a.device() == b.device() && !da.empty() && !db.empty() &&
               std::equal(da.begin() + 1, da.end(), db.begin() + 1, db.end()),
           "concat_rows: {} does not join {}: expected the same dtype, device and dims after the "
           "first",
           b.desc(), a.desc());
  const int64_t na = da[0], nb = db[0];
  da[0] = na + nb;
  Tensor y = Tensor::empty(Shape(da), a.dtype(), a.device());
  if (na > 0) y.slice_rows(0, na).copy_from(a);
  if (nb > 0) y.slice_rows(na, na + nb).copy_from(b);
  return autograd::record(y, "concat_rows", {a, b}, [na, nb](const Tensor& g) {
    const Tensor gc = g.contiguous();
    return std::vector<Tensor>{gc.slice_rows(0, na).clone(), gc.slice_rows(na, na + nb).clone()};
  });
}

Tensor columns(const Tensor& x, int64_t a, int64_t b) {
  check_defined("columns", "x", x);
  TS_CHECK(x.ndim() >= 1 && 0 <= a && a <= b && b <= x.dim(-1),
           "columns: [{}, {}) of {}: expected 0 <= a <= b <= {} (the last dim)", a, b, x.desc(),
           x.ndim() ? x.dim(-1) : 0);
  const int64_t W = x.dim(-1), n = W ? x.numel() / W : 0;
  // [n, W] -> its columns: rows of the transposed view, copied.
  const Tensor flat = x.contiguous().view(Shape{n, W});
  Tensor y = flat.transpose_view(0, 1).slice_rows(a, b).transpose_view(0, 1).contiguous();
  std::vector<int64_t> dims = x.shape().vec();
  dims.back() = b - a;
  y = y.view(Shape(dims));
  const Shape shape = x.shape();
  return autograd::record(y, "columns", {x}, [shape, n, W, a, b](const Tensor& g) {
    // The gradient's columns placed among zero columns: rows of the transposed gradient.
    const Tensor gt = g.contiguous().view(Shape{n, b - a}).transpose_view(0, 1).contiguous();
    const Tensor full_t = rows_into_zeros(gt, Shape{W, n}, a);
    return std::vector<Tensor>{full_t.transpose_view(0, 1).contiguous().view(shape)};
  });
}

}  // namespace tessera::ops
