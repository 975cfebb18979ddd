// Layout of the work (all three kernels): a block of kRows warps; in the forward and the dq
// kernel each warp owns one query row and walks the keys in tiles of 32 staged in shared memory
// (one key per lane for the dot products, then lanes switch to owning head dimensions to
// accumulate); the dk/dv kernel is the mirror image, each warp owning one key row and walking
// the queries that can see it, for each query head of its kv head's group in turn (grouped-
// query attention: the group's dk / dv sums stay in the warp's registers). Shared tiles are padded
// to hs + 1 floats per row so that 32 lanes reading 32 different rows hit 32 different banks.
#include "kernels/cuda/attention.h"

#include "core/error.h"
#include "cuda/allocator.h"
#include "kernels/common/activation_math.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

constexpr int kRows = 8;                                  // warps (rows) per block
constexpr int kTile = 32;                                 // keys / queries per shared tile
constexpr int kDimsPerLane = kAttentionMaxHeadSize / 32;  // head dims a lane accumulates

struct Geo {
  int64_t Tq, Tk, offset;  // query rows, key rows, the position of query row 0
  int64_t C, H, hs;
  int64_t q_row, kv_row;  // row strides of q (and dq) and of kv (and dkv)
  int64_t k_col, v_col;   // where the k and v heads start in a kv row
  int64_t group;          // query heads per kv head
  float scale;
};

// Column offsets in a kv row of query head h's k and v (its kv head's).
__device__ inline int64_t k_col(const Geo& g, int64_t h) {
  return g.k_col + h / g.group * g.hs;
}
__device__ inline int64_t v_col(const Geo& g, int64_t h) {
  return g.v_col + h / g.group * g.hs;
}

__device__ inline float neg_inf() {
  return -__int_as_float(0x7f800000);
}

// Rows of one batch's q or kv: `rows` of them, `ld` elements apart.
template <class T>
struct Rows {
  const T* base;
  int64_t rows, ld;
};
template <class T>
__device__ inline Rows<T> q_rows(const Geo& g, const T* q, int64_t b) {
  return {q + b * g.Tq * g.q_row, g.Tq, g.q_row};
}
template <class T>
__device__ inline Rows<T> kv_rows(const Geo& g, const T* kv, int64_t b) {
  return {kv + b * g.Tk * g.kv_row, g.Tk, g.kv_row};
}

// Loads rows [t0, t0 + kTile) of one head's q, k or v (col = its column offset) into a tile of
// stride `stride`, times `mul`, zero past the last row. All threads of the block take part.
template <class T>
__device__ void load_tile(const Rows<T>& src, const Geo& g, int64_t t0, int64_t col, float mul,
                          float* tile, int stride) {
  for (int idx = threadIdx.x; idx < kTile * g.hs; idx += blockDim.x) {
    const int r = idx / int(g.hs), d = idx % int(g.hs);
    const int64_t t = t0 + r;
    tile[r * stride + d] = t < src.rows ? ld(src.base, t * src.ld + col + d) * mul : 0.f;
  }
}

// The dot product of a warp-owned row (broadcast reads) with tile row `r` (one per lane).
__device__ inline float dot_row(const float* own, const float* tile, int r, int ld, int hs) {
  float acc = 0.f;
  for (int d = 0; d < hs; ++d) acc += own[d] * tile[r * ld + d];
  return acc;
}

// acc[k] += sum over tile rows j of w_j * tile[j][lane + 32 k], w_j held by lane j.
__device__ inline void accumulate_rows(float (&acc)[kDimsPerLane], float w, const float* tile,
                                       int ld, int hs) {
  const int lane = threadIdx.x % kWarp;
  for (int j = 0; j < kTile; ++j) {
    const float wj = __shfl_sync(0xffffffffu, w, j);
#pragma unroll
    for (int k = 0; k < kDimsPerLane; ++k) {
      const int dim = lane + kWarp * k;
      if (dim < hs) acc[k] += wj * tile[j * ld + dim];
    }
  }
}

template <class T>
__global__ void forward_kernel(Geo g, const T* q, const T* kv, T* out, float* lse) {
  TS_DYNAMIC_SHARED(float, smem);
  const int hs = int(g.hs), ldk = hs + 1;
  float* q_s = smem;               // [kRows][hs]
  float* k_s = q_s + kRows * hs;   // [kTile][hs + 1]
  float* v_s = k_s + kTile * ldk;  // [kTile][hs + 1]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const Rows<T> qr = q_rows(g, q, b), kvr = kv_rows(g, kv, b);
  const int64_t i = int64_t(blockIdx.x) * kRows + warp;  // this warp's query row
  const int64_t pos = g.offset + i;                      // its position: it sees keys <= pos
  const bool active = i < g.Tq;
  float* q_own = q_s + warp * hs;
  for (int d = lane; d < hs; d += kWarp)
    q_own[d] = active ? ld(qr.base, i * qr.ld + h * hs + d) * g.scale : 0.f;

  float m = neg_inf(), l = 0.f, o[kDimsPerLane] = {};
  // The position of the block's last query row: the last key any of its rows sees.
  const int64_t last = g.offset + (int64_t(blockIdx.x) + 1) * kRows - 1;
  for (int64_t j0 = 0; j0 <= last && j0 < g.Tk; j0 += kTile) {
    __syncthreads();  // the previous tile is no longer read (and q_s is written, first time)
    load_tile(kvr, g, j0, k_col(g, h), 1.f, k_s, ldk);
    load_tile(kvr, g, j0, v_col(g, h), 1.f, v_s, ldk);
    __syncthreads();
    if (!active || j0 > pos) continue;  // warp-uniform: every key of the tile is in the future
    const int64_t j = j0 + lane;
    const float sc = j <= pos ? dot_row(q_own, k_s, lane, ldk, hs) : neg_inf();
    const float m_new = fmaxf(m, warp_max(sc));   // finite: key j0 <= i is in the tile
    const float p = math::exp_f32(sc - m_new);    // exp(-inf) = 0 for masked keys
    const float corr = math::exp_f32(m - m_new);  // 0 on the first tile (m = -inf)
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int k = 0; k < kDimsPerLane; ++k) o[k] *= corr;
    accumulate_rows(o, p, v_s, ldk, hs);
    m = m_new;
  }
  if (!active) return;
  const float inv = 1.f / l;
  T* orow = out + (b * g.Tq + i) * g.C + h * hs;
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int dim = lane + kWarp * k;
    if (dim < hs) st(orow, dim, o[k] * inv);
  }
  if (lane == 0) lse[bh * g.Tq + i] = m + logf(l);
}

// delta[bh, i] = dout_i . out_i over the head's dims (the softmax backward's row term).
template <class T>
__global__ void delta_kernel(Geo g, const T* out, const float* dout, float* delta, int64_t rows) {
  const int64_t r = int64_t(blockIdx.x) * kRows + threadIdx.x / kWarp;  // r = bh * Tq + i
  if (r >= rows) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t bh = r / g.Tq, i = r % g.Tq, b = bh / g.H, h = bh % g.H;
  const int64_t off = (b * g.Tq + i) * g.C + h * g.hs;
  float acc = 0.f;
  for (int64_t d = lane; d < g.hs; d += kWarp) acc += dout[off + d] * ld(out, off + d);
  acc = warp_sum(acc);
  if (lane == 0) delta[r] = acc;
}

// dq_i = scale * sum_j dS_ij k_j,  dS_ij = P_ij (dO_i . v_j - delta_i),  P from lse.
template <class T>
__global__ void dq_kernel(Geo g, const T* q, const T* kv, const float* lse, const float* delta,
                          const float* dout, T* dq_out) {
  TS_DYNAMIC_SHARED(float, smem);
  const int hs = int(g.hs), ldk = hs + 1;
  float* q_s = smem;               // [kRows][hs]
  float* do_s = q_s + kRows * hs;  // [kRows][hs]
  float* k_s = do_s + kRows * hs;  // [kTile][hs + 1]
  float* v_s = k_s + kTile * ldk;  // [kTile][hs + 1]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const Rows<T> qr = q_rows(g, q, b), kvr = kv_rows(g, kv, b);
  const int64_t i = int64_t(blockIdx.x) * kRows + warp;
  const int64_t pos = g.offset + i;
  const bool active = i < g.Tq;
  float* q_own = q_s + warp * hs;
  float* do_own = do_s + warp * hs;
  for (int d = lane; d < hs; d += kWarp) {
    q_own[d] = active ? ld(qr.base, i * qr.ld + h * hs + d) * g.scale : 0.f;
    do_own[d] = active ? dout[(b * g.Tq + i) * g.C + h * hs + d] : 0.f;
  }
  const float lse_i = active ? lse[bh * g.Tq + i] : 0.f;
  const float delta_i = active ? delta[bh * g.Tq + i] : 0.f;
  float dq[kDimsPerLane] = {};
  const int64_t last = g.offset + (int64_t(blockIdx.x) + 1) * kRows - 1;
  for (int64_t j0 = 0; j0 <= last && j0 < g.Tk; j0 += kTile) {
    __syncthreads();
    load_tile(kvr, g, j0, k_col(g, h), 1.f, k_s, ldk);
    load_tile(kvr, g, j0, v_col(g, h), 1.f, v_s, ldk);
    __syncthreads();
    if (!active || j0 > pos) continue;
    const int64_t j = j0 + lane;
    float ds = 0.f;
    if (j <= pos) {
      const float p = math::exp_f32(dot_row(q_own, k_s, lane, ldk, hs) - lse_i);
      ds = p * (dot_row(do_own, v_s, lane, ldk, hs) - delta_i);
    }
    accumulate_rows(dq, ds, k_s, ldk, hs);
  }
  if (!active) return;
  T* drow = dq_out + (b * g.Tq + i) * g.q_row + h * hs;
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int dim = lane + kWarp * k;
    if (dim < hs) st(drow, dim, g.scale * dq[k]);
  }
}

// dv_j = sum_i P_ij dO_i,  dk_j = sum_i dS_ij (scale q_i), over the queries at positions >= j of
// every query head of the kv head's group (none for keys past the last query: zero). A block per
// (batch, kv head, key rows): the group's heads are walked in order, accumulating in the same
// registers: no atomics, a fixed order.
template <class T>
__global__ void dkv_kernel(Geo g, const T* q, const T* kv, const float* lse, const float* delta,
                           const float* dout, T* dkv) {
  TS_DYNAMIC_SHARED(float, smem);
  const int hs = int(g.hs), ldq = hs + 1;
  float* k_s = smem;                  // [kRows][hs]: this block's key rows
  float* v_s = k_s + kRows * hs;      // [kRows][hs]
  float* q_t = v_s + kRows * hs;      // [kTile][hs + 1]: query tile, pre-scaled
  float* do_t = q_t + kTile * ldq;    // [kTile][hs + 1]
  float* lse_t = do_t + kTile * ldq;  // [kTile]
  float* delta_t = lse_t + kTile;     // [kTile]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t Hkv = g.H / g.group;
  const int64_t bk = blockIdx.y, b = bk / Hkv, kvh = bk % Hkv;
  const Rows<T> qr = q_rows(g, q, b), kvr = kv_rows(g, kv, b);
  const int64_t j = int64_t(blockIdx.x) * kRows + warp;  // this warp's key row
  const bool active = j < g.Tk;
  float* k_own = k_s + warp * hs;
  float* v_own = v_s + warp * hs;
  const int64_t kc = g.k_col + kvh * hs, vc = g.v_col + kvh * hs;
  for (int d = lane; d < hs; d += kWarp) {
    k_own[d] = active ? ld(kvr.base, j * kvr.ld + kc + d) : 0.f;
    v_own[d] = active ? ld(kvr.base, j * kvr.ld + vc + d) : 0.f;
  }
  float dk[kDimsPerLane] = {}, dv[kDimsPerLane] = {};
  // The block's first key row, and the tile of the first query row that sees it.
  const int64_t first = int64_t(blockIdx.x) * kRows;
  const int64_t first_query = first > g.offset ? first - g.offset : 0;
  for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
    const int64_t bh = b * g.H + h;
    for (int64_t i0 = first_query / kTile * kTile; i0 < g.Tq; i0 += kTile) {
      __syncthreads();
      load_tile(qr, g, i0, h * hs, g.scale, q_t, ldq);
      for (int idx = threadIdx.x; idx < kTile * hs; idx += blockDim.x) {
        const int r = idx / hs, d = idx % hs;
        const int64_t t = i0 + r;
        do_t[r * ldq + d] = t < g.Tq ? dout[(b * g.Tq + t) * g.C + h * hs + d] : 0.f;
      }
      if (threadIdx.x < kTile) {
        const int64_t t = i0 + threadIdx.x;
        lse_t[threadIdx.x] = t < g.Tq ? lse[bh * g.Tq + t] : 0.f;
        delta_t[threadIdx.x] = t < g.Tq ? delta[bh * g.Tq + t] : 0.f;
      }
      __syncthreads();
      // Warp-uniform: every query of the tile is at a position before the key.
      if (!active || g.offset + i0 + kTile - 1 < j) continue;
      const int64_t i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (g.offset + i >= j && i < g.Tq) {
        p = math::exp_f32(dot_row(k_own, q_t, lane, ldq, hs) - lse_t[lane]);
        ds = p * (dot_row(v_own, do_t, lane, ldq, hs) - delta_t[lane]);
      }
      accumulate_rows(dv, p, do_t, ldq, hs);
      accumulate_rows(dk, ds, q_t, ldq, hs);
    }
  }
  if (!active) return;
  T* drow = dkv + (b * g.Tk + j) * g.kv_row;
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int dim = lane + kWarp * k;
    if (dim < hs) {
      st(drow, kc + dim, dk[k]);
      st(drow, vc + dim, dv[k]);
    }
  }
}

Geo geometry(const kernels::AttentionWindowDims& d) {
  TS_CHECK(kernels::attention_dims_valid(d),
           "cuda attention: channels {}, heads {}, kv_heads {}: expected heads > 0 dividing "
           "channels and kv_heads > 0 dividing heads",
           d.channels, d.heads, d.kv_heads);
  TS_CHECK(kernels::attention_window_valid(d),
           "cuda attention: batch {}, {} queries at offset {}, {} keys: expected sizes >= 0 and "
           "keys >= offset + queries",
           d.batch, d.q_seq, d.q_offset, d.kv_seq);
  Geo g;
  g.Tq = d.q_seq, g.Tk = d.kv_seq, g.offset = d.q_offset;
  g.C = d.channels, g.H = d.heads, g.hs = kernels::attention_head_size(d);
  g.q_row = d.q_row, g.kv_row = d.kv_row;
  g.k_col = d.kv_col, g.v_col = d.kv_col + kernels::attention_kv_channels(d);
  g.group = kernels::attention_group(d);
  g.scale = 1.f / sqrtf(float(g.hs));
  TS_CHECK(g.hs <= kAttentionMaxHeadSize, "cuda attention: head size {} (C {} / H {}) exceeds {}",
           g.hs, g.C, g.H, kAttentionMaxHeadSize);
  TS_CHECK(d.batch * d.heads <= 65535, "cuda attention: batch * heads = {} exceeds 65535",
           d.batch * d.heads);
  return g;
}

// A block per (8 rows, batch * heads): the forward and dq kernels over query rows and heads, the
// dk/dv kernel over key rows and kv heads.
dim3 row_grid(const kernels::AttentionWindowDims& d, int64_t rows, int64_t heads) {
  return dim3(unsigned((rows + kRows - 1) / kRows), unsigned(d.batch * heads));
}

}  // namespace

template <class T>
void attention_window_forward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                              T* out, float* lse, cudaStream_t s) {
  const Geo g = geometry(d);
  if (d.batch == 0 || d.q_seq == 0) return;
  const size_t smem = size_t(kRows * g.hs + 2 * kTile * (g.hs + 1)) * sizeof(float);
  launch<forward_kernel<T>>(row_grid(d, d.q_seq, d.heads), kRows * kWarp, smem, s, g, q, kv, out,
                            lse);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void attention_window_backward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                               const T* out, const float* lse, const float* dout, T* dq, T* dkv,
                               cudaStream_t s) {
  const Geo g = geometry(d);
  if (d.batch == 0 || d.q_seq == 0) return;
  const int64_t rows = d.batch * d.heads * d.q_seq;
  DeviceCachingAllocator& alloc = device_allocator();
  const size_t bytes = size_t(rows) * sizeof(float);
  auto* delta = static_cast<float*>(alloc.allocate_on(bytes, s));
  launch<delta_kernel<T>>(unsigned((rows + kRows - 1) / kRows), kRows * kWarp, 0, s, g, out, dout,
                          delta, rows);
  CUDA_CHECK_LAUNCH();
  const size_t smem_q = size_t(2 * kRows * g.hs + 2 * kTile * (g.hs + 1)) * sizeof(float);
  launch<dq_kernel<T>>(row_grid(d, d.q_seq, d.heads), kRows * kWarp, smem_q, s, g, q, kv, lse,
                       delta, dout, dq);
  CUDA_CHECK_LAUNCH();
  const size_t smem_kv =
      size_t(2 * kRows * g.hs + 2 * kTile * (g.hs + 1) + 2 * kTile) * sizeof(float);
  launch<dkv_kernel<T>>(row_grid(d, d.kv_seq, d.kv_heads), kRows * kWarp, smem_kv, s, g, q, kv, lse,
                        delta, dout, dkv);
  CUDA_CHECK_LAUNCH();
  alloc.release(delta, bytes);
}

template <class T>
void attention_forward(const kernels::AttentionDims& d, const T* qkv, T* out, float* lse,
                       cudaStream_t s) {
  attention_window_forward(kernels::attention_window_of(d), qkv, qkv, out, lse, s);
}

template <class T>
void attention_backward(const kernels::AttentionDims& d, const T* qkv, const T* out,
                        const float* lse, const float* dout, T* dqkv, cudaStream_t s) {
  attention_window_backward(kernels::attention_window_of(d), qkv, qkv, out, lse, dout, dqkv, dqkv,
                            s);
}

#define TS_ATTENTION_INSTANTIATE(T)                                                              \
  template void attention_window_forward<T>(const kernels::AttentionWindowDims&, const T*,       \
                                            const T*, T*, float*, cudaStream_t);                 \
  template void attention_window_backward<T>(const kernels::AttentionWindowDims&, const T*,      \
                                             const T*, const T*, const float*, const float*, T*, \
                                             T*, cudaStream_t);                                  \
  template void attention_forward<T>(const kernels::AttentionDims&, const T*, T*, float*,        \
                                     cudaStream_t);                                              \
  template void attention_backward<T>(const kernels::AttentionDims&, const T*, const T*,         \
                                      const float*, const float*, T*, cudaStream_t);
TS_ATTENTION_INSTANTIATE(float)
TS_ATTENTION_INSTANTIATE(bf16)
#undef TS_ATTENTION_INSTANTIATE

}  // namespace tessera::cuda
