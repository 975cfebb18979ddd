// The op kernels of a device backend: the table through which src/ops reaches a device's
// kernels (DeviceBackend::ops, core/backend.h; ops/dispatch.h's device_kernels). The CUDA
// backend fills it (src/cuda/op_kernels.cu), on a GPU or on the emulated device alike; a
// build without one has no table, and an op on a device it cannot reach fails naming the op.
//
// Each entry has its CPU twin's name and arguments (kernels/cpu/): an op picks the backend with
// one branch, `if (is_cuda(dev)) device_kernels<T>(op, dev).add(...); else cpu::add<T>(...);`.
// Entries run on the calling thread's current stream of the device. Pointers are device memory.
//
// Kernels templated on a storage type are in TypedOpKernels<T>, one table per type (f32, bf16,
// f16); an entry a type has no kernel for is null, and is named so below (the ops never call it
// for that type: their dtype checks come first).
#pragma once
#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "kernels/common/activation.h"
#include "kernels/common/attention_dims.h"
#include "kernels/common/cached_attention_dims.h"
#include "kernels/common/conv_dims.h"
#include "kernels/common/gemm_args.h"
#include "kernels/common/id_groups.h"
#include "kernels/common/rope.h"

namespace tessera::kernels {

// The kernels over one storage type T (float, bf16 or f16). Gradients arriving are f32.
template <class T>
struct TypedOpKernels {
  // Element-wise; b broadcast over the trailing nb elements (nb == n: same shape).
  void (*add)(const T* a, const T* b, T* y, int64_t n, int64_t nb);
  void (*mul)(const T* a, const T* b, T* y, int64_t n, int64_t nb);
  void (*scale)(const T* x, T* y, float a, int64_t n);
  void (*sum_rows_acc)(const T* x, float* y, int64_t rows, int64_t cols);  // y += column sums

  void (*activation_forward)(Activation act, const T* x, T* y, int64_t n);
  void (*activation_backward)(Activation act, const T* x, const float* gy, T* gx, int64_t n);
  void (*dropout_forward)(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset);
  void (*dropout_backward)(const float* gy, T* gx, int64_t n, float p, uint64_t seed,
                           uint64_t offset);
  void (*embedding_forward)(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C);
  void (*max_pool2d_forward)(const Pool2dDims& d, const T* x, T* y, int32_t* argmax);

  void (*layer_norm_forward)(const T* x, const float* w, const float* b, T* y, float* mean,
                             float* rstd, int64_t rows, int64_t C, float eps);
  void (*layer_norm_backward)(const T* x, const float* w, const float* mean, const float* rstd,
                              const float* gy, T* gx, float* dw, float* db, int64_t rows,
                              int64_t C);
  void (*rms_norm_forward)(const T* x, const float* w, T* y, float* rstd, int64_t rows, int64_t C,
                           float eps);
  void (*rms_norm_backward)(const T* x, const float* w, const float* rstd, const float* gy, T* gx,
                            float* dw, int64_t rows, int64_t C);
  void (*rope_rotate)(const RopeDims& d, const T* x, const float* table, T* y, bool inverse);

  void (*softmax_forward)(const T* x, T* y, int64_t rows, int64_t C);
  void (*softmax_backward)(const T* y, const float* gy, T* gx, int64_t rows, int64_t C);
  void (*cross_entropy_forward)(const T* logits, const int32_t* targets, float* lse, float* loss,
                                int64_t rows, int64_t V, int32_t ignore_index);
  // The logits' gradient written as T (null for f16).
  void (*cross_entropy_backward)(const float* logits, const int32_t* targets, const float* lse,
                                 const float* g, int64_t count, T* gx, int64_t rows, int64_t V,
                                 int32_t ignore_index);
  void (*sharded_cross_entropy_backward)(const float* logits, const int32_t* targets,
                                         const float* lse, const float* g, int64_t count, T* gx,
                                         int64_t rows, int64_t V, int64_t first_id,
                                         int32_t ignore_index);

  // silu(gate) * up from x (T) into each output type (swiglu_forward_to picks one).
  void (*swiglu_forward_f32)(const T* x, float* y, int64_t rows, int64_t F);
  void (*swiglu_forward_bf16)(const T* x, bf16* y, int64_t rows, int64_t F);
  void (*swiglu_forward_f16)(const T* x, f16* y, int64_t rows, int64_t F);
  void (*swiglu_backward)(const T* x, const float* gy, T* gx, int64_t rows, int64_t F);

  // Attention over a window of keys, in T (null for f16).
  void (*attention_window_forward)(const AttentionWindowDims& d, const T* q, const T* kv, T* out,
                                   float* lse);
  void (*attention_window_backward)(const AttentionWindowDims& d, const T* q, const T* kv,
                                    const T* out, const float* lse, const float* dout, T* dq,
                                    T* dkv);
  // The tensor-core attention: T operands, f32 outputs and gradients (null for f32).
  void (*attention_tc_window_forward)(const AttentionWindowDims& d, const T* q, const T* kv,
                                      float* out, float* lse);
  void (*attention_tc_window_backward)(const AttentionWindowDims& d, const T* q, const T* kv,
                                       const float* out, const float* lse, const float* dout,
                                       float* dq, float* dkv);
};

// swiglu's forward from T into TO.
template <class TO, class T>
auto swiglu_forward_to(const TypedOpKernels<T>& k) {
  if constexpr (std::is_same_v<TO, float>)
    return k.swiglu_forward_f32;
  else if constexpr (std::is_same_v<TO, bf16>)
    return k.swiglu_forward_bf16;
  else
    return k.swiglu_forward_f16;
}

struct OpKernels {
  TypedOpKernels<float> float32;
  TypedOpKernels<bf16> bfloat16;
  TypedOpKernels<f16> float16;

  void (*gemm)(const GemmArgs& g);
  double (*sum)(const float* x, int64_t n);  // returns to the host: waits for the device
  void (*cached_attention)(const CachedAttentionDims& d, const float* qkv, float* k_cache,
                           float* v_cache, float* out);
  void (*conv2d_forward)(const Conv2dDims& d, const float* x, const float* w, const float* b,
                         float* y, DType compute);
  void (*conv2d_backward)(const Conv2dDims& d, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* db, DType compute);
  void (*max_pool2d_backward)(const Pool2dDims& d, const float* dy, const int32_t* argmax,
                              float* dx);
  // dw (+)= the rows of gy gathered by id (groups: kernels::group_ids of the ids).
  void (*embedding_backward)(const float* gy, const IdGroups& groups, float* dw, int64_t V,
                             int64_t C, bool accumulate);
  void (*sharded_cross_entropy_stats)(const float* logits, const int32_t* targets, float* stats,
                                      int64_t rows, int64_t V, int64_t first_id,
                                      int32_t ignore_index);
  void (*sharded_cross_entropy_combine)(const float* all, int64_t ranks, const int32_t* targets,
                                        float* lse, float* loss, int64_t rows,
                                        int32_t ignore_index);

  template <class T>
  const TypedOpKernels<T>& of() const {
    if constexpr (std::is_same_v<T, float>)
      return float32;
    else if constexpr (std::is_same_v<T, bf16>)
      return bfloat16;
    else
      return float16;
  }
};

}  // namespace tessera::kernels
