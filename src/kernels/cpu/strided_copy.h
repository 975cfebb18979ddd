// Strided -> contiguous copy of a host tensor's elements (Tensor::contiguous() of a view made by
// transpose_view, slice_rows or a column cut): the CPU's side of the backend table's
// strided_copy (kernels/cuda/strided_copy.h is the GPU's). Bytes are moved, never converted.
#pragma once
#include <cstddef>

#include "core/backend.h"

namespace tessera::cpu {

// dst[k] = src[sum_d idx_d(k) * strides[d]] for k in [0, prod(sizes)), idx(k) the row-major
// multi-index of k, elements of elem_size bytes; src points at the view's first element.
// Dims of size 1 are dropped and dims the view walks contiguously are merged first, so a view
// whose innermost dim has stride 1 copies whole runs with memcpy (a column cut, a transpose of
// outer dims); a true transpose of the innermost dim is copied in cache-sized tiles. Large
// copies are split across OpenMP threads.
void strided_copy(const void* src, void* dst, const StridedLayout& view, size_t elem_size);

// The view with dims of size 1 dropped and adjacent dims merged where the outer one's stride is
// the inner one's extent (what strided_copy walks); a contiguous view becomes one dim of
// stride 1. Exposed for tests.
StridedLayout simplified_layout(const StridedLayout& view);

}  // namespace tessera::cpu
