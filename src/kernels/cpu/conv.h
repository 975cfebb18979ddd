// 2-D convolution (im2col + oneDNN GEMM) and max pooling, NCHW, forward and backward; the
// dims structs are kernels/common/conv_dims.h.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/conv_dims.h"

namespace tessera::cpu {

// col [Cin*kh*kw, Ho*Wo] of one image x [Cin, H, W]; zero where a window covers padding.
// T is the GEMM operand type (float or bf16).
template <class T>
void im2col(const kernels::Conv2dDims& d, const float* x, T* col);
// dx [Cin, H, W] += col [Cin*kh*kw, Ho*Wo] scattered back to the pixels it was gathered from.
void col2im_add(const kernels::Conv2dDims& d, const float* col, float* dx);

// y [N, Cout, Ho, Wo] = conv(x, w) + b (b may be null). GEMM operands in `compute` (f32 or bf16),
// accumulation f32.
void conv2d_forward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* b,
                    float* y, DType compute);
// From dy [N, Cout, Ho, Wo]: dx (overwritten), dw (overwritten), db (overwritten); any of the
// three may be null when that gradient is not wanted.
void conv2d_backward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, DType compute);

// y [N, C, Ho, Wo] = window maxima of x; argmax (may be null) receives each maximum's index
// within its [H, W] plane (the first one on ties; a NaN wins and propagates).
template <class T>
void max_pool2d_forward(const kernels::Pool2dDims& d, const T* x, T* y, int32_t* argmax);
// dx [N, C, H, W] (overwritten) = dy routed to the argmax positions (summed where windows share
// a maximum).
void max_pool2d_backward(const kernels::Pool2dDims& d, const float* dy, const int32_t* argmax,
                         float* dx);

}  // namespace tessera::cpu
