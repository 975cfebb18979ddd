#include "kernels/cuda/strided_copy.h"

#include "core/error.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

// One thread per destination element: its row-major multi-index, innermost dim first, gives the
// source offset. The dim loop is unrolled over kMaxDims so the view stays in registers (a
// runtime-indexed loop over a by-value struct would spill it to local memory).
template <class Word>
__global__ void strided_copy_kernel(const Word* src, Word* dst, StridedView v, int64_t n) {
  TS_GRID_STRIDE(k, n) {
    int64_t rem = k, off = 0;
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      if (d >= v.ndim) continue;
      const int64_t size = v.sizes[d];
      off += rem % size * v.strides[d];
      rem /= size;
    }
    dst[k] = src[off];
  }
}

template <class Word>
void copy_words(const void* src, void* dst, const StridedView& v, int64_t n, cudaStream_t s) {
  launch<strided_copy_kernel<Word>>(grid_for(n), kThreads, 0, s, static_cast<const Word*>(src),
                                    static_cast<Word*>(dst), v, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void strided_copy(const void* src, void* dst, const StridedView& view, size_t elem_size,
                  cudaStream_t s) {
  TS_CHECK(view.ndim >= 0 && view.ndim <= kMaxDims, "cuda strided_copy: {} dims, expected 0 to {}",
           view.ndim, kMaxDims);
  int64_t n = 1;
  for (int d = 0; d < view.ndim; ++d) {
    TS_CHECK(view.sizes[d] >= 0, "cuda strided_copy: size {} of dim {} is negative", view.sizes[d],
             d);
    n *= view.sizes[d];
  }
  if (n == 0) return;
  switch (elem_size) {
    case 1:
      return copy_words<uint8_t>(src, dst, view, n, s);
    case 2:
      return copy_words<uint16_t>(src, dst, view, n, s);
    case 4:
      return copy_words<uint32_t>(src, dst, view, n, s);
    case 8:
      return copy_words<uint64_t>(src, dst, view, n, s);
    default:
      fail("cuda strided_copy: element size {} bytes unsupported (expected 1, 2, 4 or 8)",
           elem_size);
  }
}

}  // namespace tessera::cuda
