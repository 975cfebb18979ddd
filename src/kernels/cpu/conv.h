// 2-D convolution (im2col + oneDNN GEMM) and max pooling, NCHW, forward and backward.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace tessera::cpu {

struct Conv2dDims {
  int64_t n = 0, cin = 0, h = 0, w = 0;  // input [N, Cin, H, W]
  int64_t cout = 0, kh = 0, kw = 0;      // weight [Cout, Cin, kh, kw]
  int64_t stride = 1, pad = 0;
  int64_t ho = 0, wo = 0;  // output [N, Cout, Ho, Wo]
  // Fills ho and wo from the rest: (H + 2 pad - kh) / stride + 1.
  void infer_output();
  int64_t patch() const { return cin * kh * kw; }  // im2col rows (the GEMM's k)
  int64_t pixels() const { return ho * wo; }       // im2col columns
};

// col [Cin*kh*kw, Ho*Wo] of one image x [Cin, H, W]; zero where a window covers padding.
// T is the GEMM operand type (float or bf16).
template <class T>
void im2col(const Conv2dDims& d, const float* x, T* col);
// dx [Cin, H, W] += col [Cin*kh*kw, Ho*Wo] scattered back to the pixels it was gathered from.
void col2im_add(const Conv2dDims& d, const float* col, float* dx);

// y [N, Cout, Ho, Wo] = conv(x, w) + b (b may be null). GEMM operands in `compute` (f32 or bf16),
// accumulation f32.
void conv2d_forward(const Conv2dDims& d, const float* x, const float* w, const float* b, float* y,
                    DType compute);
// From dy [N, Cout, Ho, Wo]: dx (overwritten), dw (overwritten), db (overwritten); any of the
// three may be null when that gradient is not wanted.
void conv2d_backward(const Conv2dDims& d, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, DType compute);

struct Pool2dDims {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t kernel = 1, stride = 1;
  int64_t ho = 0, wo = 0;  // (H - kernel) / stride + 1, no padding
};

// y [N, C, Ho, Wo] = window maxima of x; argmax (may be null) receives each maximum's index
// within its [H, W] plane (the first one on ties; a NaN wins and propagates).
template <class T>
void max_pool2d_forward(const Pool2dDims& d, const T* x, T* y, int32_t* argmax);
// dx [N, C, H, W] (overwritten) = dy routed to the argmax positions (summed where windows share
// a maximum).
void max_pool2d_backward(const Pool2dDims& d, const float* dy, const int32_t* argmax, float* dx);

}  // namespace tessera::cpu
