// The shape arguments of the 2-D convolution and max-pooling kernels (cpu/conv.h, cuda/conv.h),
// NCHW.
#pragma once
#include <cstdint>

namespace tessera::kernels {

struct Conv2dDims {
  int64_t n = 0, cin = 0, h = 0, w = 0;  // input [N, Cin, H, W]
  int64_t cout = 0, kh = 0, kw = 0;      // weight [Cout, Cin, kh, kw]
  int64_t stride = 1, pad = 0;
  int64_t ho = 0, wo = 0;  // output [N, Cout, Ho, Wo]
  // Fills ho and wo from the rest: (H + 2 pad - kh) / stride + 1. Host code.
  void infer_output() {
    ho = (h + 2 * pad - kh) / stride + 1;
    wo = (w + 2 * pad - kw) / stride + 1;
  }
  int64_t patch() const { return cin * kh * kw; }  // im2col rows (the GEMM's k)
  int64_t pixels() const { return ho * wo; }       // im2col columns
};

struct Pool2dDims {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t kernel = 1, stride = 1;
  int64_t ho = 0, wo = 0;  // (H - kernel) / stride + 1, no padding
};

}  // namespace tessera::kernels
