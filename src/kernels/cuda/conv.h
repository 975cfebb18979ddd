// 2-D convolution (im2col + cuBLASLt GEMM, one image at a time like the CPU kernel) and max
// pooling, NCHW, forward and backward, on device buffers; cpu/conv.h semantics, common/conv_dims.h
// dims.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device.h"
#include "kernels/common/conv_dims.h"

namespace tessera::cuda {

// col [Cin*kh*kw, Ho*Wo] (T: float or bf16) of one image x [Cin, H, W]; zero over padding.
template <class T>
void im2col(const kernels::Conv2dDims& d, const float* x, T* col,
            cudaStream_t s = current_stream());
// dx [Cin, H, W] (+)= col [Cin*kh*kw, Ho*Wo] scattered back. Computed as a gather (each input
// pixel sums the columns that read it, in a fixed order), so no atomics.
void col2im(const kernels::Conv2dDims& d, const float* col, float* dx, bool accumulate,
            cudaStream_t s = current_stream());

// y [N, Cout, Ho, Wo] = conv(x, w) + b (b may be null); GEMM operands in `compute` (f32 or
// bf16), accumulation f32.
void conv2d_forward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* b,
                    float* y, DType compute, cudaStream_t s = current_stream());
// dx, dw, db (each overwritten, each may be null) from dy.
void conv2d_backward(const kernels::Conv2dDims& d, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, DType compute,
                     cudaStream_t s = current_stream());

// Window maxima; argmax (may be null) gets each maximum's index in its [H, W] plane, the first
// on ties, NaN winning (the CPU's rule).
template <class T>
void max_pool2d_forward(const kernels::Pool2dDims& d, const T* x, T* y, int32_t* argmax,
                        cudaStream_t s = current_stream());
// dx (overwritten) = dy routed to the argmax positions, summed in output order per pixel.
void max_pool2d_backward(const kernels::Pool2dDims& d, const float* dy, const int32_t* argmax,
                         float* dx, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
