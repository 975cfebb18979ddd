#include "nn/layers.h"

#include "ops/ops.h"

namespace tessera::nn {

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& g, float weight_std) {
  TS_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got in {} out {}", in, out);
  weight = Tensor::randn(Shape{out, in}, g, 0.f, weight_std);
  register_parameter("weight", weight);
  if (has_bias) {
    bias = Tensor::zeros(Shape{out});
    register_parameter("bias", bias);
  }
}

Tensor Linear::forward(const Tensor& x) const {
  return ops::linear(x, weight, bias);
}

Embedding::Embedding(int64_t num, int64_t dim, Generator& g, float std) {
  TS_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive, got {} x {}", num, dim);
  weight = Tensor::randn(Shape{num, dim}, g, 0.f, std);
  register_parameter("weight", weight);
}

Tensor Embedding::forward(const Tensor& ids) const {
  return ops::embedding(weight, ids);
}

const char* norm_kind_name(NormKind kind) {
  return kind == NormKind::layer_norm ? "layer_norm" : "rms_norm";
}

Norm::Norm(NormKind kind_, int64_t dim, float eps_) : kind(kind_), eps(eps_) {
  TS_CHECK(dim > 0, "Norm ({}): dim must be positive, got {}", norm_kind_name(kind), dim);
  weight = Tensor::ones(Shape{dim});
  register_parameter("weight", weight);
  if (kind == NormKind::layer_norm) {
    bias = Tensor::zeros(Shape{dim});
    register_parameter("bias", bias);
  }
}

Tensor Norm::forward(const Tensor& x) const {
  return forward(x, x.dtype());
}

Tensor Norm::forward(const Tensor& x, DType out) const {
  const Tensor w = sum_grads ? tp_copy(weight, *sum_grads) : weight;
  if (kind == NormKind::rms_norm) return ops::rms_norm(x, w, eps);
  const Tensor b = sum_grads ? tp_copy(bias, *sum_grads) : bias;
  return ops::layer_norm(x, w, b, eps, out);
}

Conv2d::Conv2d(int64_t in, int64_t out, int kernel, int stride_, int padding_, Generator& g,
               float weight_std)
    : stride(stride_), padding(padding_) {
  TS_CHECK(in > 0 && out > 0 && kernel > 0 && stride > 0 && padding >= 0,
           "Conv2d: invalid sizes in {} out {} kernel {} stride {} padding {}", in, out, kernel,
           stride, padding);
  weight = Tensor::randn(Shape{out, in, kernel, kernel}, g, 0.f, weight_std);
  bias = Tensor::zeros(Shape{out});
  register_parameter("weight", weight);
  register_parameter("bias", bias);
}

Tensor Conv2d::forward(const Tensor& x) const {
  return ops::conv2d(x, weight, bias, stride, padding);
}

Dropout::Dropout(float p_, Generator* g) : p(p_), gen_(g) {
  TS_CHECK(p >= 0.f && p < 1.f, "Dropout: probability {} outside [0, 1)", p);
  TS_CHECK(p == 0.f || g != nullptr, "Dropout: p = {} needs a generator", p);
}

Tensor Dropout::forward(const Tensor& x) const {
  if (p == 0.f || !training()) return x;
  return ops::dropout(x, p, *gen_, true);
}

Tensor Dropout::forward_rows(const Tensor& x, int64_t first, int64_t rows) const {
  if (p == 0.f || !training()) return x;
  TS_CHECK(x.ndim() == 2 && first >= 0 && first + x.dim(0) <= rows,
           "Dropout::forward_rows: {} as rows {} .. of {}", x.desc(), first, rows);
  // Element i of the whole [rows, C] draws at offset + i (ops::dropout): start at this part's
  // first element, then skip to the end of the whole.
  const uint64_t seed = gen_->seed(), offset = gen_->offset();
  const uint64_t width = uint64_t(x.dim(1));
  gen_->set_state(seed, offset + uint64_t(first) * width);
  Tensor y = ops::dropout(x, p, *gen_, true);
  gen_->set_state(seed, offset + uint64_t(rows) * width);
  return y;
}

}  // namespace tessera::nn
