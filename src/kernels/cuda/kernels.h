// Every CUDA kernel family in one include: the seam for the op-level dispatch (docs/CUDA.md,
// "Op-level dispatch"). Each header mirrors its cpu/ counterpart - same function names, same
// argument order, same dims structs - plus a trailing stream that defaults to
// cuda::current_stream(), so an op can choose the backend with one branch on Tensor::device():
//
//   if (x.device().type == DeviceType::cuda) cuda::layer_norm_forward<T>(...same args...);
//   else                                     cpu::layer_norm_forward<T>(...same args...);
//
// Differences from cpu/: the GEMM (cuda::GemmArgs adds fused epilogues and 16-bit output),
// cross-entropy and attention also take bf16 storage, the reductions that return a value to
// the host (sum, sum_squares, unscale_grads) synchronise the stream, and
// the AdamW / SGD / loss-scaling kernels (optim.h) have no cpu/ twin (the CPU optimizers hold
// theirs), nor has the strided copy (strided_copy.h: the CPU's is in core/tensor.cpp), nor the
// tensor-core attention (attention_tc.h: bf16/f16 q/k/v, f32 outputs; its reference is the
// CPU attention on the 16-bit-rounded inputs).
#pragma once

#include "kernels/cuda/activation.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/cached_attention.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/dropout.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/optim.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/sharded_cross_entropy.h"
#include "kernels/cuda/softmax.h"
#include "kernels/cuda/strided_copy.h"
#include "kernels/cuda/swiglu.h"
