// The basic layers: Linear, Embedding, Norm (LayerNorm / RMSNorm), Conv2d and Dropout. Each takes
// its initialisation from the caller (a Generator and a standard deviation), so models decide the
// scheme (GPT-2's normal(0, 0.02), Kaiming for classifiers) and runs are reproducible.
#pragma once
#include <cstdint>

#include "core/rng.h"
#include "nn/module.h"
#include "nn/tensor_parallel.h"

namespace tessera::nn {

// y = x · weight^T + bias, weight [out, in] drawn from normal(0, weight_std), bias zeros.
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, Generator& g, float weight_std);
  Tensor forward(const Tensor& x) const;

  Tensor weight;  // [out, in]
  Tensor bias;    // [out], undefined without bias
};

// Rows of weight [num, dim] (normal(0, std)) looked up by i32 ids.
class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator& g, float std);
  Tensor forward(const Tensor& ids) const;

  Tensor weight;  // [num, dim]
};

// LayerNorm or RMSNorm over the last dim, the decoder's choice (GPT-2 / Llama).
enum class NormKind { layer_norm, rms_norm };
const char* norm_kind_name(NormKind kind);  // "layer_norm" | "rms_norm"

// weight ones, and for LayerNorm a bias of zeros (RMSNorm has none: `bias` stays undefined).
class Norm : public Module {
 public:
  Norm(NormKind kind, int64_t dim, float eps);
  Tensor forward(const Tensor& x) const;
  // The normalised x for a GEMM's input: LayerNorm stores it as `out` directly (e.g. bf16 under
  // autocast; see ops::layer_norm); RMSNorm returns x's dtype and the GEMM casts it.
  Tensor forward(const Tensor& x, DType out) const;

  NormKind kind;
  Tensor weight, bias;  // [dim]
  float eps;
  // Sequence parallelism: each rank normalises only its rows, so its weight gradients are
  // partial; with a group they are summed over it in backward (tp_copy), before they reach
  // the parameters.
  TensorParallelGroup* sum_grads = nullptr;
};

// 2-D convolution, weight [out, in, k, k] from normal(0, weight_std), bias zeros.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int kernel, int stride, int padding, Generator& g,
         float weight_std);
  Tensor forward(const Tensor& x) const;

  Tensor weight, bias;
  int stride, padding;
};

// Dropout with probability p, active only in training mode. Draws from *g, which the owner
// (e.g. GPT) keeps alive and whose state checkpoints can save; g may be null when p == 0.
class Dropout : public Module {
 public:
  Dropout(float p, Generator* g);
  Tensor forward(const Tensor& x) const;
  // Rows [first, first + x.dim(0)) of a [rows, C] input: the mask those rows would get from
  // forward() on the whole (the same draws), and the generator advanced past all rows. What
  // sequence parallelism needs to equal one rank.
  Tensor forward_rows(const Tensor& x, int64_t first, int64_t rows) const;

  float p;

 private:
  Generator* gen_;
};

}  // namespace tessera::nn
