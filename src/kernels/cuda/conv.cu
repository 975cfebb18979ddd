#include "kernels/cuda/conv.h"

#include "core/error.h"
#include "cuda/allocator.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/matmul.h"

namespace tessera::cuda {
namespace {

struct Dev {  // Conv2dDims by value for kernels (its infer_output() is host code)
  int64_t cin, h, w, kh, kw, stride, pad, ho, wo;
};
Dev dev(const kernels::Conv2dDims& d) {
  return {d.cin, d.h, d.w, d.kh, d.kw, d.stride, d.pad, d.ho, d.wo};
}

// One thread per col element: row r = (c, ki, kj), column p = (oh, ow).
template <class T>
__global__ void im2col_kernel(Dev d, const float* x, T* col, int64_t total) {
  const int64_t P = d.ho * d.wo;
  TS_GRID_STRIDE(idx, total) {
    const int64_t r = idx / P, p = idx % P;
    const int64_t c = r / (d.kh * d.kw), ki = r / d.kw % d.kh, kj = r % d.kw;
    const int64_t ih = p / d.wo * d.stride - d.pad + ki, iw = p % d.wo * d.stride - d.pad + kj;
    const bool inside = ih >= 0 && ih < d.h && iw >= 0 && iw < d.w;
    st(col, idx, inside ? x[(c * d.h + ih) * d.w + iw] : 0.f);
  }
}

// One thread per input pixel (c, ih, iw): sums col over the taps (ki, kj) whose output
// position (oh, ow) read it, taps in order.
__global__ void col2im_kernel(Dev d, const float* col, float* dx, bool accumulate, int64_t total) {
  const int64_t P = d.ho * d.wo;
  TS_GRID_STRIDE(idx, total) {
    const int64_t c = idx / (d.h * d.w), ih = idx / d.w % d.h, iw = idx % d.w;
    float acc = 0.f;
    for (int64_t ki = 0; ki < d.kh; ++ki) {
      const int64_t th = ih + d.pad - ki;  // = oh * stride
      if (th < 0 || th % d.stride) continue;
      const int64_t oh = th / d.stride;
      if (oh >= d.ho) continue;
      for (int64_t kj = 0; kj < d.kw; ++kj) {
        const int64_t tw = iw + d.pad - kj;
        if (tw < 0 || tw % d.stride) continue;
        const int64_t ow = tw / d.stride;
        if (ow >= d.wo) continue;
        acc += col[((c * d.kh + ki) * d.kw + kj) * P + oh * d.wo + ow];
      }
    }
    dx[idx] = accumulate ? dx[idx] + acc : acc;
  }
}

// y [N, Cout, P] += b[o]
__global__ void add_channel_bias_kernel(float* y, const float* b, int64_t cout, int64_t P,
                                        int64_t total) {
  TS_GRID_STRIDE(i, total) y[i] += b[i / P % cout];
}

// db[o] = sum over images and pixels of dy[n, o, :], one block per channel, fixed order.
__global__ void channel_sum_kernel(const float* dy, float* db, int64_t n, int64_t cout, int64_t P) {
  __shared__ float scratch[kWarp];
  const int64_t o = blockIdx.x;
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = threadIdx.x; p < P; p += blockDim.x) acc += dy[(i * cout + o) * P + p];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) db[o] = acc;
}

template <class T>
__global__ void max_pool_forward_kernel(kernels::Pool2dDims d, const T* x, T* y, int32_t* argmax,
                                        int64_t total) {
  const int64_t out_plane = d.ho * d.wo;
  TS_GRID_STRIDE(o, total) {
    const int64_t pl = o / out_plane, q = o % out_plane;
    const T* xp = x + pl * d.h * d.w;
    const int64_t start = q / d.wo * d.stride * d.w + q % d.wo * d.stride;
    int64_t bi = start;
    float bv = ld(xp, start);
    for (int64_t ki = 0; ki < d.kernel; ++ki)
      for (int64_t kj = 0; kj < d.kernel; ++kj) {
        const int64_t idx = start + ki * d.w + kj;
        const float v = ld(xp, idx);
        if (v > bv || (v != v && bv == bv)) bv = v, bi = idx;
      }
    y[o] = xp[bi];
    if (argmax) argmax[o] = int32_t(bi);
  }
}

// One thread per input pixel: the outputs whose windows cover it, in output order.
__global__ void max_pool_backward_kernel(kernels::Pool2dDims d, const float* dy,
                                         const int32_t* argmax, float* dx, int64_t total) {
  const int64_t in_plane = d.h * d.w, out_plane = d.ho * d.wo;
  TS_GRID_STRIDE(idx, total) {
    const int64_t pl = idx / in_plane, pix = idx % in_plane;
    const int64_t ih = pix / d.w, iw = pix % d.w;
    // oh * stride <= ih < oh * stride + kernel
    const int64_t oh0 = ih < d.kernel ? 0 : (ih - d.kernel) / d.stride + 1;
    const int64_t ow0 = iw < d.kernel ? 0 : (iw - d.kernel) / d.stride + 1;
    const int64_t oh1 = ih / d.stride < d.ho - 1 ? ih / d.stride : d.ho - 1;
    const int64_t ow1 = iw / d.stride < d.wo - 1 ? iw / d.stride : d.wo - 1;
    float acc = 0.f;
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = pl * out_plane + oh * d.wo + ow;
        if (argmax[o] == pix) acc += dy[o];
      }
    dx[idx] = acc;
  }
}

// A scratch device buffer from the caching allocator for the length of a call.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t s)
      : bytes_(bytes), p_(bytes ? device_allocator().allocate_on(bytes, s) : nullptr) {}
  ~Scratch() {
    if (p_) device_allocator().release(p_, bytes_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return p_; }

 private:
  size_t bytes_;
  void* p_;
};

void check_compute(DType compute) {
  TS_CHECK(compute == DType::f32 || compute == DType::bf16,
           "cuda conv2d: GEMM compute dtype {} unsupported (expected f32 or bf16)",
           dtype_name(compute));
}

// The GEMM operand form of an f32 device buffer: itself for f32, else a bf16 copy in `store`.
const void* operand(const float* src, int64_t n, DType compute, const Scratch& store,
                    cudaStream_t s) {
  if (compute == DType::f32) return src;
  cast(src, DType::f32, store.get(), compute, n, s);
  return store.get();
}

void im2col_any(const kernels::Conv2dDims& d, const float* x, void* col, DType compute,
                cudaStream_t s) {
  if (compute == DType::bf16)
    im2col(d, x, static_cast<bf16*>(col), s);
  else
    im2col(d, x, static_cast<float*>(col), s);
}

}  // namespace

template <class T>
void im2col(const kernels::Conv2dDims& d, const float* x, T* col, cudaStream_t s) {
  const int64_t total = d.patch() * d.pixels();
  if (total <= 0) return;
  launch<im2col_kernel<T>>(grid_for(total), kThreads, 0, s, dev(d), x, col, total);
  CUDA_CHECK_LAUNCH();
}

void col2im(const kernels::Conv2dDims& d, const float* col, float* dx, bool accumulate,
            cudaStream_t s) {
  const int64_t total = d.cin * d.h * d.w;
  if (total <= 0) return;
  launch<col2im_kernel>(grid_for(total), kThreads, 0, s, dev(d), col, dx, accumulate, total);
  CUDA_CHECK_LAUNCH();
}

void conv2d_forward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* b,
                    float* y, DType compute, cudaStream_t s) {
  check_compute(compute);
  const int64_t K = d.patch(), P = d.pixels(), es = int64_t(dtype_size(compute));
  Scratch w_store(compute == DType::f32 ? 0 : size_t(d.cout * K * es), s);
  Scratch col(size_t(K * P * es), s);
  const void* wt = operand(w, d.cout * K, compute, w_store, s);
  for (int64_t i = 0; i < d.n; ++i) {
    im2col_any(d, x + i * d.cin * d.h * d.w, col.get(), compute, s);
    GemmArgs g;  // y_i [Cout, P] = W [Cout, K] · col [K, P]
    g.m = d.cout, g.n = P, g.k = K, g.ab_type = compute;
    g.a = wt, g.b = col.get(), g.c = y + i * d.cout * P;
    g.label = "conv2d_forward";
    gemm(g, s);
  }
  const int64_t total = d.n * d.cout * P;
  if (b && total > 0) {
    launch<add_channel_bias_kernel>(grid_for(total), kThreads, 0, s, y, b, d.cout, P, total);
    CUDA_CHECK_LAUNCH();
  }
}

void conv2d_backward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, DType compute, cudaStream_t s) {
  check_compute(compute);
  const int64_t K = d.patch(), P = d.pixels(), in_size = d.cin * d.h * d.w;
  const int64_t es = int64_t(dtype_size(compute));
  const bool lowp = compute != DType::f32;
  Scratch w_store(dx && lowp ? size_t(d.cout * K * es) : 0, s);
  Scratch dy_store(lowp ? size_t(d.cout * P * es) : 0, s);
  Scratch col(dw ? size_t(K * P * es) : 0, s);
  Scratch dcol(dx ? size_t(K * P) * sizeof(float) : 0, s);
  const void* wt = dx ? operand(w, d.cout * K, compute, w_store, s) : nullptr;
  if (dw && d.n == 0) CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(d.cout * K) * sizeof(float), s));
  for (int64_t i = 0; i < d.n; ++i) {
    const float* dyi = dy + i * d.cout * P;
    const void* dyt = operand(dyi, d.cout * P, compute, dy_store, s);
    if (dw) {  // dW [Cout, K] (+)= dy_i [Cout, P] · col_i^T
      im2col_any(d, x + i * in_size, col.get(), compute, s);
      GemmArgs g;
      g.m = d.cout, g.n = K, g.k = P, g.ab_type = compute, g.trans_b = true;
      g.a = dyt, g.b = col.get(), g.c = dw, g.accumulate = i > 0;
      g.label = "conv2d_backward_weight";
      gemm(g, s);
    }
    if (dx) {  // dcol [K, P] = W^T · dy_i, gathered back onto dx_i
      GemmArgs g;
      g.m = K, g.n = P, g.k = d.cout, g.ab_type = compute, g.trans_a = true;
      g.a = wt, g.b = dyt, g.c = dcol.get();
      g.label = "conv2d_backward_input";
      gemm(g, s);
      col2im(d, static_cast<const float*>(dcol.get()), dx + i * in_size, false, s);
    }
  }
  if (db && d.cout > 0) {
    launch<channel_sum_kernel>(unsigned(d.cout), kThreads, 0, s, dy, db, d.n, d.cout, P);
    CUDA_CHECK_LAUNCH();
  }
}

template <class T>
void max_pool2d_forward(const kernels::Pool2dDims& d, const T* x, T* y, int32_t* argmax,
                        cudaStream_t s) {
  const int64_t total = d.n * d.c * d.ho * d.wo;
  if (total <= 0) return;
  launch<max_pool_forward_kernel<T>>(grid_for(total), kThreads, 0, s, d, x, y, argmax, total);
  CUDA_CHECK_LAUNCH();
}

void max_pool2d_backward(const kernels::Pool2dDims& d, const float* dy, const int32_t* argmax,
                         float* dx, cudaStream_t s) {
  const int64_t total = d.n * d.c * d.h * d.w;
  if (total <= 0) return;
  launch<max_pool_backward_kernel>(grid_for(total), kThreads, 0, s, d, dy, argmax, dx, total);
  CUDA_CHECK_LAUNCH();
}

template void im2col<float>(const kernels::Conv2dDims&, const float*, float*, cudaStream_t);
template void im2col<bf16>(const kernels::Conv2dDims&, const float*, bf16*, cudaStream_t);
template void max_pool2d_forward<float>(const kernels::Pool2dDims&, const float*, float*, int32_t*,
                                        cudaStream_t);
template void max_pool2d_forward<bf16>(const kernels::Pool2dDims&, const bf16*, bf16*, int32_t*,
                                       cudaStream_t);
template void max_pool2d_forward<f16>(const kernels::Pool2dDims&, const f16*, f16*, int32_t*,
                                      cudaStream_t);

}  // namespace tessera::cuda
