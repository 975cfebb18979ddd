// The dtype GEMM inputs are computed in: f32, or bf16 / f16 for mixed precision. Parameters stay
// f32; ops that run GEMMs (matmul, linear, linear_gelu, conv2d) cast their inputs to this type
// and accumulate in f32, on the CPU and on CUDA alike; attention rounds q, k, v and its incoming
// gradient to it (tensor cores on CUDA, f32 math on rounded inputs on the CPU). f16 (max 65504) needs dynamic loss
// scaling (optim/loss_scaler.h): an activation or gradient beyond its range becomes inf, which
// the scaler detects and answers by skipping the step.
#pragma once
#include "core/dtype.h"

namespace tessera {

DType autocast_dtype();
// Throws tessera::Error for anything but f32, bf16 and f16.
void set_autocast_dtype(DType t);

class AutocastGuard {
 public:
  explicit AutocastGuard(DType t) : prev_(autocast_dtype()) { set_autocast_dtype(t); }
  ~AutocastGuard() { set_autocast_dtype(prev_); }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType prev_;
};

}  // namespace tessera
