// One thread per (row, head, pair i): a q or k head's pair (i, i + hs/2) rotated, a v head's two
// values copied. The table row is the token's position (a warp reads consecutive cos / sin).
#include "kernels/cuda/rope.h"

#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

struct RopeGeo {
  int64_t seq, half, head_size, row_heads, rotated_heads, offset, pairs;
  float sign;  // -1: rotate by minus the angle (the backward)
};

template <class T>
__global__ void rope_kernel(RopeGeo g, const T* x, const float* table, T* y) {
  TS_GRID_STRIDE(idx, g.pairs) {
    const int64_t i = idx % g.half, row_head = idx / g.half;
    const int64_t head = row_head % g.row_heads, row = row_head / g.row_heads;
    const int64_t a = row_head * g.head_size + i, b = a + g.half;  // the pair's elements
    if (head < g.rotated_heads) {
      const float* c = table + (g.offset + row % g.seq) * g.head_size;  // [2, hs/2]
      const kernels::RopePair r =
          kernels::rope_rotate_pair(ld(x, a), ld(x, b), c[i], g.sign * c[g.half + i]);
      st(y, a, r.first);
      st(y, b, r.second);
    } else {
      y[a] = x[a];
      y[b] = x[b];
    }
  }
}

}  // namespace

template <class T>
void rope_rotate(const kernels::RopeDims& d, const T* x, const float* table, T* y, bool inverse,
                 cudaStream_t s) {
  RopeGeo g;
  g.seq = d.seq, g.half = kernels::rope_half(d), g.head_size = d.head_size;
  g.row_heads = kernels::rope_row_heads(d), g.rotated_heads = kernels::rope_rotated_heads(d);
  g.offset = d.position_offset;
  g.pairs = d.batch * d.seq * g.row_heads * g.half;
  g.sign = inverse ? -1.f : 1.f;
  if (g.pairs <= 0) return;
  launch<rope_kernel<T>>(grid_for(g.pairs), kThreads, 0, s, g, x, table, y);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE(T)                                                                  \
  template void rope_rotate<T>(const kernels::RopeDims&, const T*, const float*, T*, bool, \
                               cudaStream_t);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
TS_INSTANTIATE(f16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda
