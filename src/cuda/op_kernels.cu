// The CUDA op kernels' table (kernels/common/op_kernels.h). Each entry forwards to the kernel of
// the same name in src/kernels/cuda: lambdas, not the functions themselves, so that the stream
// argument's default (the calling thread's current stream) is taken. Constant-initialised, as
// backend.cu's table is: no static constructor.
#include "cuda/op_kernels.h"

#include <type_traits>

#include "kernels/cuda/kernels.h"

namespace tessera::cuda {
namespace {

using kernels::Activation;
using kernels::AttentionWindowDims;

template <class T>
constexpr kernels::TypedOpKernels<T> typed_kernels() {
  kernels::TypedOpKernels<T> k = {
      .add = [](const T* a, const T* b, T* y, int64_t n,
                int64_t nb) { cuda::add<T>(a, b, y, n, nb); },
      .mul = [](const T* a, const T* b, T* y, int64_t n,
                int64_t nb) { cuda::mul<T>(a, b, y, n, nb); },
      .scale = [](const T* x, T* y, float a, int64_t n) { cuda::scale<T>(x, y, a, n); },
      .sum_rows_acc = [](const T* x, float* y, int64_t rows,
                         int64_t cols) { cuda::sum_rows_acc<T>(x, y, rows, cols); },
      .activation_forward = [](Activation act, const T* x, T* y,
                               int64_t n) { cuda::activation_forward<T>(act, x, y, n); },
      .activation_backward = [](Activation act, const T* x, const float* gy, T* gx,
                                int64_t n) { cuda::activation_backward<T>(act, x, gy, gx, n); },
      .dropout_forward =
          [](const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
            cuda::dropout_forward<T>(x, y, n, p, seed, offset);
          },
      .dropout_backward =
          [](const float* gy, T* gx, int64_t n, float p, uint64_t seed, uint64_t offset) {
            cuda::dropout_backward<T>(gy, gx, n, p, seed, offset);
          },
      .embedding_forward = [](const T* w, const int32_t* ids, T* y, int64_t n,
                              int64_t C) { cuda::embedding_forward<T>(w, ids, y, n, C); },
      .max_pool2d_forward = [](const kernels::Pool2dDims& d, const T* x, T* y,
                               int32_t* argmax) { cuda::max_pool2d_forward<T>(d, x, y, argmax); },
      .layer_norm_forward =
          [](const T* x, const float* w, const float* b, T* y, float* mean, float* rstd,
             int64_t rows, int64_t C,
             float eps) { cuda::layer_norm_forward<T>(x, w, b, y, mean, rstd, rows, C, eps); },
      .layer_norm_backward =
          [](const T* x, const float* w, const float* mean, const float* rstd, const float* gy,
             T* gx, float* dw, float* db, int64_t rows, int64_t C) {
            cuda::layer_norm_backward<T>(x, w, mean, rstd, gy, gx, dw, db, rows, C);
          },
      .rms_norm_forward = [](const T* x, const float* w, T* y, float* rstd, int64_t rows, int64_t C,
                             float eps) { cuda::rms_norm_forward<T>(x, w, y, rstd, rows, C, eps); },
      .rms_norm_backward =
          [](const T* x, const float* w, const float* rstd, const float* gy, T* gx, float* dw,
             int64_t rows,
             int64_t C) { cuda::rms_norm_backward<T>(x, w, rstd, gy, gx, dw, rows, C); },
      .rope_rotate = [](const kernels::RopeDims& d, const T* x, const float* table, T* y,
                        bool inverse) { cuda::rope_rotate<T>(d, x, table, y, inverse); },
      .softmax_forward = [](const T* x, T* y, int64_t rows,
                            int64_t C) { cuda::softmax_forward<T>(x, y, rows, C); },
      .softmax_backward = [](const T* y, const float* gy, T* gx, int64_t rows,
                             int64_t C) { cuda::softmax_backward<T>(y, gy, gx, rows, C); },
      .cross_entropy_forward =
          [](const T* logits, const int32_t* targets, float* lse, float* loss, int64_t rows,
             int64_t V, int32_t ignore_index) {
            cuda::cross_entropy_forward<T>(logits, targets, lse, loss, rows, V, ignore_index);
          },
      .cross_entropy_backward = nullptr,
      .sharded_cross_entropy_backward = nullptr,
      .swiglu_forward_f32 = [](const T* x, float* y, int64_t rows,
                               int64_t F) { cuda::swiglu_forward<T, float>(x, y, rows, F); },
      .swiglu_forward_bf16 = [](const T* x, bf16* y, int64_t rows,
                                int64_t F) { cuda::swiglu_forward<T, bf16>(x, y, rows, F); },
      .swiglu_forward_f16 = [](const T* x, f16* y, int64_t rows,
                               int64_t F) { cuda::swiglu_forward<T, f16>(x, y, rows, F); },
      .swiglu_backward = [](const T* x, const float* gy, T* gx, int64_t rows,
                            int64_t F) { cuda::swiglu_backward<T>(x, gy, gx, rows, F); },
      .attention_window_forward = nullptr,
      .attention_window_backward = nullptr,
      .attention_tc_window_forward = nullptr,
      .attention_tc_window_backward = nullptr,
  };
  // The entries some types have no kernel for (op_kernels.h names them).
  if constexpr (!std::is_same_v<T, f16>) {
    k.cross_entropy_backward = [](const float* logits, const int32_t* targets, const float* lse,
                                  const float* g, int64_t count, T* gx, int64_t rows, int64_t V,
                                  int32_t ignore_index) {
      cuda::cross_entropy_backward<T>(logits, targets, lse, g, count, gx, rows, V, ignore_index);
    };
    k.sharded_cross_entropy_backward =
        [](const float* logits, const int32_t* targets, const float* lse, const float* g,
           int64_t count, T* gx, int64_t rows, int64_t V, int64_t first_id, int32_t ignore_index) {
          cuda::sharded_cross_entropy_backward<T>(logits, targets, lse, g, count, gx, rows, V,
                                                  first_id, ignore_index);
        };
    k.attention_window_forward = [](const AttentionWindowDims& d, const T* q, const T* kv, T* out,
                                    float* lse) {
      cuda::attention_window_forward<T>(d, q, kv, out, lse);
    };
    k.attention_window_backward = [](const AttentionWindowDims& d, const T* q, const T* kv,
                                     const T* out, const float* lse, const float* dout, T* dq,
                                     T* dkv) {
      cuda::attention_window_backward<T>(d, q, kv, out, lse, dout, dq, dkv);
    };
  }
  if constexpr (!std::is_same_v<T, float>) {
    k.attention_tc_window_forward = [](const AttentionWindowDims& d, const T* q, const T* kv,
                                       float* out, float* lse) {
      cuda::attention_tc_window_forward<T>(d, q, kv, out, lse);
    };
    k.attention_tc_window_backward = [](const AttentionWindowDims& d, const T* q, const T* kv,
                                        const float* out, const float* lse, const float* dout,
                                        float* dq, float* dkv) {
      cuda::attention_tc_window_backward<T>(d, q, kv, out, lse, dout, dq, dkv);
    };
  }
  return k;
}

}  // namespace

constexpr kernels::OpKernels kOpKernels = {
    .float32 = typed_kernels<float>(),
    .bfloat16 = typed_kernels<bf16>(),
    .float16 = typed_kernels<f16>(),
    .gemm = [](const kernels::GemmArgs& g) { cuda::gemm(g); },
    .sum = [](const float* x, int64_t n) { return cuda::sum(x, n); },
    .cached_attention = [](const kernels::CachedAttentionDims& d, const float* qkv, float* k_cache,
                           float* v_cache,
                           float* out) { cuda::cached_attention(d, qkv, k_cache, v_cache, out); },
    .conv2d_forward = [](const kernels::Conv2dDims& d, const float* x, const float* w,
                         const float* b, float* y,
                         DType compute) { cuda::conv2d_forward(d, x, w, b, y, compute); },
    .conv2d_backward =
        [](const kernels::Conv2dDims& d, const float* x, const float* w, const float* dy, float* dx,
           float* dw, float* db,
           DType compute) { cuda::conv2d_backward(d, x, w, dy, dx, dw, db, compute); },
    .max_pool2d_backward = [](const kernels::Pool2dDims& d, const float* dy, const int32_t* argmax,
                              float* dx) { cuda::max_pool2d_backward(d, dy, argmax, dx); },
    .embedding_backward =
        [](const float* gy, const kernels::IdGroups& groups, float* dw, int64_t V, int64_t C,
           bool accumulate) { cuda::embedding_backward(gy, groups, dw, V, C, accumulate); },
    .sharded_cross_entropy_stats =
        [](const float* logits, const int32_t* targets, float* stats, int64_t rows, int64_t V,
           int64_t first_id, int32_t ignore_index) {
          cuda::sharded_cross_entropy_stats(logits, targets, stats, rows, V, first_id,
                                            ignore_index);
        },
    .sharded_cross_entropy_combine =
        [](const float* all, int64_t ranks, const int32_t* targets, float* lse, float* loss,
           int64_t rows, int32_t ignore_index) {
          cuda::sharded_cross_entropy_combine(all, ranks, targets, lse, loss, rows, ignore_index);
        },
};

}  // namespace tessera::cuda
