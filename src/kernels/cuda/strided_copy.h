// Strided -> contiguous copy of a device tensor's elements (Tensor::contiguous() of a view made
// by transpose_view or slice_rows), any rank up to kMaxDims, any element size: bytes are moved,
// never converted, so the copy is bit-identical to the CPU's for every dtype.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/shape.h"
#include "cuda/device.h"

namespace tessera::cuda {

// The source view: its sizes and strides (in elements) per dim, outermost first. Passed to the
// kernel by value, so a copy is one launch and no metadata upload.
struct StridedView {
  int32_t ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
};

// dst[k] = src[sum_d idx_d(k) * strides[d]] for k in [0, prod(sizes)), idx(k) the row-major
// multi-index of k; elements of elem_size bytes. src points at the view's first element (its
// storage offset already applied), dst at numel contiguous elements. elem_size 1, 2, 4 or 8
// (every DType), else an Error.
void strided_copy(const void* src, void* dst, const StridedView& view, size_t elem_size,
                  cudaStream_t s = current_stream());

}  // namespace tessera::cuda
