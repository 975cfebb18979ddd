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
  int64_t T, C, H, hs, row;  // row: the qkv row stride C + 2 Ckv
  int64_t k_col, v_col;      // where the k and v heads start in a qkv row (C, C + Ckv)
  int64_t group;             // query heads per kv head
  float scale;
};

// Column offsets in a qkv row of query head h's k and v (its kv head's).
__device__ inline int64_t k_col(const Geo& g, int64_t h) {
  return g.k_col + h / g.group * g.hs;
}
__device__ inline int64_t v_col(const Geo& g, int64_t h) {
  return g.v_col + h / g.group * g.hs;
}

__device__ inline float neg_inf() {
  return -__int_as_float(0x7f800000);
}

// Loads rows [t0, t0 + kTile) of one head's q, k or v (col = its column offset) into a tile of
// stride `stride`, times `mul`, zero past T. All threads of the block take part.
template <class T>
__device__ void load_tile(const T* base, const Geo& g, int64_t t0, int64_t col, float mul,
                          float* tile, int stride) {
  for (int idx = threadIdx.x; idx < kTile * g.hs; idx += blockDim.x) {
    const int r = idx / int(g.hs), d = idx % int(g.hs);
    const int64_t t = t0 + r;
    tile[r * stride + d] = t < g.T ? ld(base, t * g.row + col + d) * mul : 0.f;
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
__global__ void forward_kernel(Geo g, const T* qkv, T* out, float* lse) {
  TS_DYNAMIC_SHARED(float, smem);
  const int hs = int(g.hs), ldk = hs + 1;
  float* q_s = smem;               // [kRows][hs]
  float* k_s = q_s + kRows * hs;   // [kTile][hs + 1]
  float* v_s = k_s + kTile * ldk;  // [kTile][hs + 1]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const T* base = qkv + b * g.T * g.row;
  const int64_t i = int64_t(blockIdx.x) * kRows + warp;  // this warp's query row
  const bool active = i < g.T;
  float* q_own = q_s + warp * hs;
  for (int d = lane; d < hs; d += kWarp)
    q_own[d] = active ? ld(base, i * g.row + h * hs + d) * g.scale : 0.f;

  float m = neg_inf(), l = 0.f, o[kDimsPerLane] = {};
  const int64_t last = (int64_t(blockIdx.x) + 1) * kRows - 1;  // the block's last query row
  for (int64_t j0 = 0; j0 <= last && j0 < g.T; j0 += kTile) {
    __syncthreads();  // the previous tile is no longer read (and q_s is written, first time)
    load_tile(base, g, j0, k_col(g, h), 1.f, k_s, ldk);
    load_tile(base, g, j0, v_col(g, h), 1.f, v_s, ldk);
    __syncthreads();
    if (!active || j0 > i) continue;  // warp-uniform: every key of the tile is in the future
    const int64_t j = j0 + lane;
    const float sc = j <= i ? dot_row(q_own, k_s, lane, ldk, hs) : neg_inf();
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
  T* orow = out + (b * g.T + i) * g.C + h * hs;
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int dim = lane + kWarp * k;
    if (dim < hs) st(orow, dim, o[k] * inv);
  }
  if (lane == 0) lse[bh * g.T + i] = m + logf(l);
}

// delta[bh, i] = dout_i . out_i over the head's dims (the softmax backward's row term).
template <class T>
__global__ void delta_kernel(Geo g, const T* out, const float* dout, float* delta, int64_t rows) {
  const int64_t r = int64_t(blockIdx.x) * kRows + threadIdx.x / kWarp;  // r = bh * T + i
  if (r >= rows) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t bh = r / g.T, i = r % g.T, b = bh / g.H, h = bh % g.H;
  const int64_t off = (b * g.T + i) * g.C + h * g.hs;
  float acc = 0.f;
  for (int64_t d = lane; d < g.hs; d += kWarp) acc += dout[off + d] * ld(out, off + d);
  acc = warp_sum(acc);
  if (lane == 0) delta[r] = acc;
}

// dq_i = scale * sum_j dS_ij k_j,  dS_ij = P_ij (dO_i . v_j - delta_i),  P from lse.
template <class T>
__global__ void dq_kernel(Geo g, const T* qkv, const float* lse, const float* delta,
                          const float* dout, T* dqkv) {
  TS_DYNAMIC_SHARED(float, smem);
  const int hs = int(g.hs), ldk = hs + 1;
  float* q_s = smem;               // [kRows][hs]
  float* do_s = q_s + kRows * hs;  // [kRows][hs]
  float* k_s = do_s + kRows * hs;  // [kTile][hs + 1]
  float* v_s = k_s + kTile * ldk;  // [kTile][hs + 1]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const T* base = qkv + b * g.T * g.row;
  const int64_t i = int64_t(blockIdx.x) * kRows + warp;
  const bool active = i < g.T;
  float* q_own = q_s + warp * hs;
  float* do_own = do_s + warp * hs;
  for (int d = lane; d < hs; d += kWarp) {
    q_own[d] = active ? ld(base, i * g.row + h * hs + d) * g.scale : 0.f;
    do_own[d] = active ? dout[(b * g.T + i) * g.C + h * hs + d] : 0.f;
  }
  const float lse_i = active ? lse[bh * g.T + i] : 0.f;
  const float delta_i = active ? delta[bh * g.T + i] : 0.f;
  float dq[kDimsPerLane] = {};
  const int64_t last = (int64_t(blockIdx.x) + 1) * kRows - 1;
  for (int64_t j0 = 0; j0 <= last && j0 < g.T; j0 += kTile) {
    __syncthreads();
    load_tile(base, g, j0, k_col(g, h), 1.f, k_s, ldk);
    load_tile(base, g, j0, v_col(g, h), 1.f, v_s, ldk);
    __syncthreads();
    if (!active || j0 > i) continue;
    const int64_t j = j0 + lane;
    float ds = 0.f;
    if (j <= i) {
      const float p = math::exp_f32(dot_row(q_own, k_s, lane, ldk, hs) - lse_i);
      ds = p * (dot_row(do_own, v_s, lane, ldk, hs) - delta_i);
    }
    accumulate_rows(dq, ds, k_s, ldk, hs);
  }
  if (!active) return;
  T* drow = dqkv + (b * g.T + i) * g.row + h * hs;
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int dim = lane + kWarp * k;
    if (dim < hs) st(drow, dim, g.scale * dq[k]);
  }
}

// dv_j = sum_i P_ij dO_i,  dk_j = sum_i dS_ij (scale q_i), over the queries i >= j of every
// query head of the kv head's group. A block per (batch, kv head, key rows): the group's heads
// are walked in order, accumulating in the same registers: no atomics, a fixed order.
template <class T>
__global__ void dkv_kernel(Geo g, const T* qkv, const float* lse, const float* delta,
                           const float* dout, T* dqkv) {
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
  const int64_t bk = blockIdx.y, b = bk / Hkv, kv = bk % Hkv;
  const T* base = qkv + b * g.T * g.row;
  const int64_t j = int64_t(blockIdx.x) * kRows + warp;  // this warp's key row
  const bool active = j < g.T;
  float* k_own = k_s + warp * hs;
  float* v_own = v_s + warp * hs;
  const int64_t kc = g.k_col + kv * hs, vc = g.v_col + kv * hs;
  for (int d = lane; d < hs; d += kWarp) {
    k_own[d] = active ? ld(base, j * g.row + kc + d) : 0.f;
    v_own[d] = active ? ld(base, j * g.row + vc + d) : 0.f;
  }
  float dk[kDimsPerLane] = {}, dv[kDimsPerLane] = {};
  const int64_t first = int64_t(blockIdx.x) * kRows;  // the block's first key row
  for (int64_t h = kv * g.group; h < (kv + 1) * g.group; ++h) {
    const int64_t bh = b * g.H + h;
    for (int64_t i0 = first / kTile * kTile; i0 < g.T; i0 += kTile) {
      __syncthreads();
      load_tile(base, g, i0, h * hs, g.scale, q_t, ldq);
      for (int idx = threadIdx.x; idx < kTile * hs; idx += blockDim.x) {
        const int r = idx / hs, d = idx % hs;
        const int64_t t = i0 + r;
        do_t[r * ldq + d] = t < g.T ? dout[(b * g.T + t) * g.C + h * hs + d] : 0.f;
      }
      if (threadIdx.x < kTile) {
        const int64_t t = i0 + threadIdx.x;
        lse_t[threadIdx.x] = t < g.T ? lse[bh * g.T + t] : 0.f;
        delta_t[threadIdx.x] = t < g.T ? delta[bh * g.T + t] : 0.f;
      }
      __syncthreads();
      if (!active || i0 + kTile - 1 < j) continue;  // every query of the tile precedes the key
      const int64_t i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (i >= j && i < g.T) {
        p = math::exp_f32(dot_row(k_own, q_t, lane, ldq, hs) - lse_t[lane]);
        ds = p * (dot_row(v_own, do_t, lane, ldq, hs) - delta_t[lane]);
      }
      accumulate_rows(dv, p, do_t, ldq, hs);
      accumulate_rows(dk, ds, q_t, ldq, hs);
    }
  }
  if (!active) return;
  T* drow = dqkv + (b * g.T + j) * g.row;
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int dim = lane + kWarp * k;
    if (dim < hs) {
      st(drow, kc + dim, dk[k]);
      st(drow, vc + dim, dv[k]);
    }
  }
}

Geo geometry(const kernels::AttentionDims& d) {
  TS_CHECK(kernels::attention_dims_valid(d),
           "cuda attention: channels {}, heads {}, kv_heads {}: expected heads > 0 dividing "
           "channels and kv_heads > 0 dividing heads",
           d.channels, d.heads, d.kv_heads);
  Geo g;
  g.T = d.seq, g.C = d.channels, g.H = d.heads, g.hs = kernels::attention_head_size(d);
  g.row = kernels::attention_qkv_width(d);
  g.k_col = d.channels, g.v_col = d.channels + kernels::attention_kv_channels(d);
  g.group = kernels::attention_group(d);
  g.scale = 1.f / sqrtf(float(g.hs));
  TS_CHECK(g.hs <= kAttentionMaxHeadSize, "cuda attention: head size {} (C {} / H {}) exceeds {}",
           g.hs, g.C, g.H, kAttentionMaxHeadSize);
  TS_CHECK(d.batch * d.heads <= 65535, "cuda attention: batch * heads = {} exceeds 65535",
           d.batch * d.heads);
  return g;
}

// A block per (8 rows, batch * heads): the forward and dq kernels over query heads, the dk/dv
// kernel (heads = kv heads) over kv heads.
dim3 row_grid(const kernels::AttentionDims& d, int64_t heads) {
  return dim3(unsigned((d.seq + kRows - 1) / kRows), unsigned(d.batch * heads));
}

}  // namespace

template <class T>
void attention_forward(const kernels::AttentionDims& d, const T* qkv, T* out, float* lse,
                       cudaStream_t s) {
  const Geo g = geometry(d);
  if (d.batch == 0 || d.seq == 0) return;
  const size_t smem = size_t(kRows * g.hs + 2 * kTile * (g.hs + 1)) * sizeof(float);
  launch<forward_kernel<T>>(row_grid(d, d.heads), kRows * kWarp, smem, s, g, qkv, out, lse);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void attention_backward(const kernels::AttentionDims& d, const T* qkv, const T* out,
                        const float* lse, const float* dout, T* dqkv, cudaStream_t s) {
  const Geo g = geometry(d);
  if (d.batch == 0 || d.seq == 0) return;
  const int64_t rows = d.batch * d.heads * d.seq;
  DeviceCachingAllocator& alloc = device_allocator();
  const size_t bytes = size_t(rows) * sizeof(float);
  auto* delta = static_cast<float*>(alloc.allocate_on(bytes, s));
  launch<delta_kernel<T>>(unsigned((rows + kRows - 1) / kRows), kRows * kWarp, 0, s, g, out, dout,
                          delta, rows);
  CUDA_CHECK_LAUNCH();
  const size_t smem_q = size_t(2 * kRows * g.hs + 2 * kTile * (g.hs + 1)) * sizeof(float);
  launch<dq_kernel<T>>(row_grid(d, d.heads), kRows * kWarp, smem_q, s, g, qkv, lse, delta, dout,
                       dqkv);
  CUDA_CHECK_LAUNCH();
  const size_t smem_kv =
      size_t(2 * kRows * g.hs + 2 * kTile * (g.hs + 1) + 2 * kTile) * sizeof(float);
  launch<dkv_kernel<T>>(row_grid(d, d.kv_heads), kRows * kWarp, smem_kv, s, g, qkv, lse, delta,
                        dout, dqkv);
  CUDA_CHECK_LAUNCH();
  alloc.release(delta, bytes);
}

template void attention_forward<float>(const kernels::AttentionDims&, const float*, float*, float*,
                                       cudaStream_t);
template void attention_forward<bf16>(const kernels::AttentionDims&, const bf16*, bf16*, float*,
                                      cudaStream_t);
template void attention_backward<float>(const kernels::AttentionDims&, const float*, const float*,
                                        const float*, const float*, float*, cudaStream_t);
template void attention_backward<bf16>(const kernels::AttentionDims&, const bf16*, const bf16*,
                                       const float*, const float*, bf16*, cudaStream_t);

}  // namespace tessera::cuda
