// The dtype GEMM inputs are computed in (f32, or bf16 for mixed precision). Parameters stay f32;
// ops that run GEMMs cast their inputs to this type and accumulate in f32.
#pragma once
#include "core/dtype.h"

namespace tessera {

DType autocast_dtype();
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
