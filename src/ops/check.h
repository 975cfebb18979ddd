// Input checks shared by the ops. Each throws tessera::Error naming the op and the tensors.
#pragma once
#include <string>

#include "core/tensor.h"

namespace tessera::ops {

void check_defined(const char* op, const char* arg, const Tensor& t);
void check_cpu(const char* op, const Tensor& t);
void check_dtype(const char* op, const char* arg, const Tensor& t, DType expected);
void check_float(const char* op, const char* arg, const Tensor& t);  // f32 / bf16 / f16
void check_ndim(const char* op, const char* arg, const Tensor& t, int ndim);
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);
// b's shape equals the last b.ndim() dims of a's shape.
void check_suffix_shape(const char* op, const Tensor& a, const Tensor& b);

// "[1, 3]": the multi-dimensional index of flat element i of `shape`, for error messages.
std::string index_str(const Shape& shape, int64_t i);

// Cross-entropy targets (i32, read on the host): each in [0, classes) or ignore_index. Returns
// how many are not ignored; otherwise throws "OP: target T at targets[i] is out of
// range<where>: expected 0 <= target < classes (<classes_name>) or ignore_index I".
int64_t count_checked_targets(const char* op, const Tensor& host_targets, int64_t classes,
                              const char* classes_name, int32_t ignore_index,
                              const std::string& where = "");

}  // namespace tessera::ops
