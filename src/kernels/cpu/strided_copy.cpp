#include "kernels/cpu/strided_copy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.h"

namespace tessera::cpu {

StridedLayout simplified_layout(const StridedLayout& view) {
  StridedLayout out;
  for (int d = 0; d < view.ndim; ++d) {
    const int64_t size = view.sizes[d], stride = view.strides[d];
    if (size == 0) return StridedLayout{1, {0}, {1}};
    if (size == 1) continue;
    if (out.ndim > 0 && out.strides[out.ndim - 1] == stride * size) {
      out.sizes[out.ndim - 1] *= size;  // the outer dim walks on where this one ends
      out.strides[out.ndim - 1] = stride;
    } else {
      out.sizes[out.ndim] = size, out.strides[out.ndim] = stride;
      ++out.ndim;
    }
  }
  if (out.ndim == 0) return StridedLayout{1, {1}, {1}};
  return out;
}

namespace {

constexpr int64_t kParallelBytes = 1 << 18;  // below this, threads cost more than they save
constexpr int64_t kTile = 32;                // a 32 x 32 tile of 8-byte elements is 8 KiB

// The source offset (in elements) of the multi-index of `o` over dims [0, nd) of l.
int64_t outer_offset(const StridedLayout& l, int nd, int64_t o) {
  int64_t off = 0;
  for (int d = nd - 1; d >= 0; --d) {
    off += (o % l.sizes[d]) * l.strides[d];
    o /= l.sizes[d];
  }
  return off;
}

// Innermost stride 1: contiguous runs of the last dim, one memcpy each.
void copy_runs(const char* src, char* dst, const StridedLayout& l, size_t es) {
  const int nd = l.ndim;
  const size_t run = size_t(l.sizes[nd - 1]) * es;
  int64_t outer = 1;
  for (int d = 0; d < nd - 1; ++d) outer *= l.sizes[d];
#pragma omp parallel for schedule(static) if (int64_t(run) * outer > kParallelBytes)
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(dst + size_t(o) * run, src + outer_offset(l, nd - 1, o) * int64_t(es), run);
}

// Innermost stride not 1: the last two dims copied tile by tile (the source read along both in
// cache-sized blocks), one tile row per output row. With one dim the tile has one row.
template <typename E>
void copy_tiles(const E* src, E* dst, const StridedLayout& l) {
  const int nd = l.ndim;
  const int64_t cols = l.sizes[nd - 1], col_stride = l.strides[nd - 1];
  const int64_t rows = nd >= 2 ? l.sizes[nd - 2] : 1, row_stride = nd >= 2 ? l.strides[nd - 2] : 0;
  int64_t outer = 1;
  for (int d = 0; d < nd - 2; ++d) outer *= l.sizes[d];
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  const int64_t bytes = outer * rows * cols * int64_t(sizeof(E));
#pragma omp parallel for schedule(static) if (bytes > kParallelBytes)
  for (int64_t task = 0; task < outer * row_tiles; ++task) {
    const int64_t o = task / row_tiles, r0 = (task % row_tiles) * kTile;
    const int64_t r1 = std::min(rows, r0 + kTile);
    const E* s = src + (nd > 2 ? outer_offset(l, nd - 2, o) : 0);
    E* d = dst + o * rows * cols;
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) d[r * cols + c] = s[r * row_stride + c * col_stride];
    }
  }
}

}  // namespace

void strided_copy(const void* src, void* dst, const StridedLayout& view, size_t elem_size) {
  const StridedLayout l = simplified_layout(view);
  if (l.sizes[0] == 0) return;
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  if (l.strides[l.ndim - 1] == 1) return copy_runs(s, d, l, elem_size);
  switch (elem_size) {
    case 1:
      return copy_tiles(reinterpret_cast<const uint8_t*>(s), reinterpret_cast<uint8_t*>(d), l);
    case 2:
      return copy_tiles(reinterpret_cast<const uint16_t*>(s), reinterpret_cast<uint16_t*>(d), l);
    case 4:
      return copy_tiles(reinterpret_cast<const uint32_t*>(s), reinterpret_cast<uint32_t*>(d), l);
    case 8:
      return copy_tiles(reinterpret_cast<const uint64_t*>(s), reinterpret_cast<uint64_t*>(d), l);
    default:
      TS_CHECK(false, "strided_copy: element size {} (expected 1, 2, 4 or 8)", elem_size);
  }
}

}  // namespace tessera::cpu
