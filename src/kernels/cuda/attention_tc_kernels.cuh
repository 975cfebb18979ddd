// The device code of the tensor-core attention (attention_tc.h): shared-memory layout, helpers
// and kernels. Included by attention_tc.cu (nvcc), and by
// tests/cuda/test_cuda_attention_tc_emulated.cpp, which compiles it with the host compiler
// against an emulation of the CUDA built-ins and of WMMA (tests/cuda/cuda_emulation.h) to check
// indexing, masks, tile edges and layouts without a GPU. Everything is in an anonymous
// namespace: each includer gets its own copy (the kernels must not reach the host compiler's
// link as the same symbols as nvcc's).
//
// Layout of the work:
//
// Blocks of 4 warps (128 threads) own a tile of 64 rows (queries in the forward and the dq
// kernel, keys in the dk/dv kernel); warp w owns rows [16w, 16w + 16) of it and walks the other
// side's 64-row tiles, staged in shared memory. Every product is a warp-level WMMA GEMM on
// 16x16x16 fragments (16-bit operands, f32 accumulators). WMMA's accumulator layout is opaque,
// so the row-wise work (softmax, masking, dS) goes through a per-warp f32 scratch [16][68]:
// a fragment is stored there, then lane l owns row l / 2 and the column pairs 4j + 2 (l % 2)
// + {0, 1}, j = 0..15 (read as float2: each half-warp touches 32 distinct banks).
//
// Shared memory (bytes, hs = 64 / 128; dynamic, opted in above 48 KiB):
//   forward  K, V tiles [64][hs + 8] 16-bit, P [64][72] 16-bit, scratch 4 x [16][68] f32 (the
//            Q tile is staged there first, then held in registers as fragments): 45,056 / 61,440
//   dq       Q, dO, K, V tiles, dS [64][72], two scratches (S, dP): 80,896 / 113,664
//   dk/dv    K, V, Q, dO tiles, P^T and dS^T [64][72], two scratches, lse and delta [64]:
//            90,624 / 123,392
// Rows of 16-bit tiles are padded by 8 elements (16 bytes) so that the 8 rows a fragment load
// reads at once start in 8 different bank groups; every array starts 128-byte aligned (WMMA
// needs 32). Rows past T are zero-filled (never uninitialised: 0 * NaN would poison a sum) and
// masked explicitly, so partial tiles need no other special case.
//
// Softmax arithmetic is in base 2: scores are scaled by log2(e) / sqrt(hs) once and exp2f is
// the SFU's ex2 (2 ulp); the saved log-sum-exp is converted back to the natural log (the CPU's
// convention, which the backward of either kernel family reads).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "core/half.h"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTile = kAttentionTcTile;
constexpr int kWarps = kAttentionTcWarps;
constexpr int kBlock = kWarps * kWarp;  // threads per block
constexpr int kFrag = 16;               // WMMA fragment edge
constexpr int kScrLd = kTile + 4;       // f32 scratch row stride (WMMA: a multiple of 4)
constexpr int kPLd = kTile + 8;         // P / dS row stride, 16-bit (WMMA: a multiple of 8)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kTile == kWarps * kFrag, "a warp owns 16 rows of the tile");
static_assert(kTile == 64, "the lane layout covers 64 columns: 32 lanes x 2 pairs x 16 steps");

// ---- shared memory layout (host and device) ----
TS_HD constexpr size_t align128(size_t b) {
  return (b + 127) / 128 * 128;
}
TS_HD constexpr int tile_ld(int hs) {
  return hs + 8;
}
TS_HD constexpr size_t tile_bytes(int hs) {
  return align128(size_t(kTile) * size_t(tile_ld(hs)) * 2);
}
constexpr size_t kPBytes = align128(size_t(kTile) * kPLd * 2);
constexpr size_t kScratchBytes = align128(size_t(kWarps) * kFrag * kScrLd * 4);
constexpr size_t kRowBytes = align128(size_t(kTile) * 4);
TS_HD constexpr size_t cmax(size_t a, size_t b) {
  return a > b ? a : b;
}
TS_HD constexpr size_t forward_smem(int hs) {
  return 2 * tile_bytes(hs) + kPBytes + cmax(tile_bytes(hs), kScratchBytes);
}
TS_HD constexpr size_t dq_smem(int hs) {
  return 4 * tile_bytes(hs) + kPBytes + 2 * kScratchBytes;
}
TS_HD constexpr size_t dkv_smem(int hs) {
  return 4 * tile_bytes(hs) + 2 * kPBytes + 2 * kScratchBytes + 2 * kRowBytes;
}
static_assert(forward_smem(64) == 45056 && forward_smem(128) == 61440);
static_assert(dq_smem(64) == 80896 && dq_smem(128) == 113664);
static_assert(dkv_smem(64) == 90624 && dkv_smem(128) == 123392);

// ---- storage types and fragments ----
template <class T>
struct WmmaType;
template <>
struct WmmaType<bf16> {
  using type = __nv_bfloat16;
};
template <>
struct WmmaType<f16> {
  using type = __half;
};
static_assert(sizeof(bf16) == sizeof(__nv_bfloat16) && sizeof(f16) == sizeof(__half));

template <class T>
using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, typename WmmaType<T>::type,
                             wmma::row_major>;
// B row-major: element (k, n) at p[k * ld + n]. B col-major: at p[n * ld + k], i.e. the
// transpose of a row-major [n][k] array (K^T from a K tile).
template <class T>
using FragBRow = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, typename WmmaType<T>::type,
                                wmma::row_major>;
template <class T>
using FragBCol = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, typename WmmaType<T>::type,
                                wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

// Tiles hold Tessera's bf16 / f16 (the same 16 bits as CUDA's types); WMMA reads them as CUDA's.
template <class T>
__device__ inline const typename WmmaType<T>::type* wmma_ptr(const T* p) {
  return reinterpret_cast<const typename WmmaType<T>::type*>(p);
}

struct Geo {
  int64_t Tq, Tk, offset;  // query rows, key rows, the position of query row 0
  int64_t C, H;
  int64_t q_row, kv_row;  // row strides of q (and dq) and of kv (and dkv)
  int64_t k_col, v_col;   // where the k and v heads start in a kv row
  int64_t group;          // query heads per kv head
  float scale;            // 1 / sqrt(hs)
  float scale_log2;       // log2(e) / sqrt(hs)
};

// The row of batch b's kv shifted to query head h's kv head: its k and v start at columns
// k_col and v_col of it. One pointer live across the key loop, in place of the row pointer:
// at hs = 64 the forward sits at ptxas's 128 registers, and keeping the kv head or the two
// offsets live as well made it spill (as is, ptxas -v at sm_90 (CUDA 13.0) reports an 8-byte
// spill for the bf16 forward at hs = 64 and none elsewhere; before the window's separate q / kv
// pointers and offset it was 12 bytes for the f16 one: which of the two tips over is ptxas's
// choice, and narrowing the mask comparison to 32 bits made it worse).
template <int HS, class T>
__device__ inline const T* kv_head_base(const T* base, const Geo& g, int64_t h) {
  return base + int64_t(unsigned(h) / unsigned(g.group)) * HS;  // 32-bit: h < 65536
}

__device__ inline float neg_inf() {
  return -__int_as_float(0x7f800000);
}

template <class T>
__device__ inline float round_to(float x) {
  return to_f32(from_f32<T>(x));
}

// Two adjacent 16-bit values in one 32-bit store (p is 4-byte aligned: an even column).
template <class T>
__device__ inline void store_pair(T* p, float a, float b) {
  const uint32_t bits = uint32_t(from_f32<T>(a).bits) | (uint32_t(from_f32<T>(b).bits) << 16);
  *reinterpret_cast<uint32_t*>(p) = bits;
}

// Rows [t0, t0 + 64) of one head's q, k or v (rows `rows` of a batch's q or kv, `ld` apart;
// column offset col within a row) into a [64][hs + 8] tile, 16 bytes per load; rows past the
// last are zeros. All threads take part.
template <int HS, class T>
__device__ void load_tile(const T* base, int64_t ld, int64_t rows, int64_t t0, int64_t col,
                          T* tile) {
  constexpr int kVec = 8;  // 16-bit values per 16-byte load
  constexpr int kPerRow = HS / kVec;
  for (int idx = threadIdx.x; idx < kTile * kPerRow; idx += kBlock) {
    const int r = idx / kPerRow, c = idx % kPerRow * kVec;
    const int64_t t = t0 + r;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (t < rows) v = *reinterpret_cast<const uint4*>(base + t * ld + col + c);
    *reinterpret_cast<uint4*>(tile + r * tile_ld(HS) + c) = v;
  }
}

// Rows [t0, t0 + 64) of one head's dout ([B, Tq, C] f32, any alignment), rounded to T.
template <int HS, class T>
__device__ void load_dout_tile(const float* dout_b, const Geo& g, int64_t t0, int64_t col,
                               T* tile) {
  for (int idx = threadIdx.x; idx < kTile * HS; idx += kBlock) {
    const int r = idx / HS, c = idx % HS;
    const int64_t t = t0 + r;
    tile[r * tile_ld(HS) + c] = from_f32<T>(t < g.Tq ? dout_b[t * g.C + col + c] : 0.f);
  }
}

// acc[m][n] = sum_k a[m][k] bt[n][k] over k < K: 16 rows of a (row-major, stride lda) against
// 16 rows of bt (row-major, stride ldb), which WMMA reads as the col-major K x 16 operand B.
template <int K, class T>
__device__ inline void mma_abt(FragC& acc, const T* a, int lda, const T* bt, int ldb) {
  wmma::fill_fragment(acc, 0.f);
#pragma unroll
  for (int k = 0; k < K; k += kFrag) {
    FragA<T> fa;
    FragBCol<T> fb;
    wmma::load_matrix_sync(fa, wmma_ptr(a + k), lda);
    wmma::load_matrix_sync(fb, wmma_ptr(bt + k), ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
}

// The lane's place in the element-wise passes: row `row` of the warp's 16, columns
// col0 + 4j + {0, 1} for j = 0..15.
struct LaneCols {
  int row, col0;
  __device__ LaneCols() : row(int(threadIdx.x % kWarp) / 2), col0(int(threadIdx.x % 2) * 2) {}
};

__device__ inline float2 scratch_pair(const float* s_w, const LaneCols& lc, int j) {
  return *reinterpret_cast<const float2*>(s_w + lc.row * kScrLd + lc.col0 + 4 * j);
}

// Tiles in reverse order: the heaviest (last) query tiles start first, shortening the tail.
__device__ inline int64_t reversed_tile() {
  return int64_t(gridDim.x - 1 - blockIdx.x) * kTile;
}

// ---- forward ----
template <class T, int HS>
__global__ void __launch_bounds__(kBlock)
    tc_forward_kernel(Geo g, const T* q, const T* kv, float* out, float* lse) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 / f16 WMMA needs sm_80; the host refuses older devices before launching
#else
  TS_DYNAMIC_SHARED(unsigned char, smem);
  constexpr int ld = tile_ld(HS);
  constexpr int kChunks = HS / kTile;  // 64-column chunks of the head (1 or 2)
  T* k_s = reinterpret_cast<T*>(smem);
  T* v_s = reinterpret_cast<T*>(smem + tile_bytes(HS));
  T* p_s = reinterpret_cast<T*>(smem + 2 * tile_bytes(HS));
  float* scratch = reinterpret_cast<float*>(smem + 2 * tile_bytes(HS) + kPBytes);
  T* q_s = reinterpret_cast<T*>(scratch);  // staged there before the loop, then in registers
  const int warp = int(threadIdx.x) / kWarp;
  const LaneCols lc;
  float* s_w = scratch + warp * kFrag * kScrLd;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const int64_t q0 = reversed_tile();
  const T* kv_base = kv_head_base<HS>(kv + b * g.Tk * g.kv_row, g, h);

  load_tile<HS>(q + b * g.Tq * g.q_row, g.q_row, g.Tq, q0, h * HS, q_s);
  __syncthreads();
  FragA<T> qf[HS / kFrag];
#pragma unroll
  for (int kk = 0; kk < HS / kFrag; ++kk)
    wmma::load_matrix_sync(qf[kk], wmma_ptr(q_s + warp * kFrag * ld + kk * kFrag), ld);

  const int64_t i = q0 + warp * kFrag + lc.row;  // this lane's query row
  // Its last visible key, its position (rows past Tq: any key there is).
  const int64_t last = g.offset + (i < g.Tq ? i : g.Tq - 1);
  float m = neg_inf(), l = 0.f;  // running max (base 2) and sum
  float o[HS / 2] = {};          // (chunk, j, pair) -> column chunk*64+col0+4j+e
  const int64_t key_end = g.offset + q0 + kTile < g.Tk ? g.offset + q0 + kTile : g.Tk;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // the previous K/V tiles (and, the first time, q_s) are no longer read
    load_tile<HS>(kv_base, g.kv_row, g.Tk, j0, g.k_col, k_s);
    load_tile<HS>(kv_base, g.kv_row, g.Tk, j0, g.v_col, v_s);
    __syncthreads();
    // S = Q K^T for the warp's 16 rows, 16 keys at a time.
#pragma unroll
    for (int n = 0; n < kTile / kFrag; ++n) {
      FragC acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < HS / kFrag; ++kk) {
        FragBCol<T> kf;
        wmma::load_matrix_sync(kf, wmma_ptr(k_s + n * kFrag * ld + kk * kFrag), ld);
        wmma::mma_sync(acc, qf[kk], kf, acc);
      }
      wmma::store_matrix_sync(s_w + n * kFrag, acc, kScrLd, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax over the row (two lanes per row: one shuffle combines them).
    float sc[32];
    float tmax = neg_inf();
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float2 x = scratch_pair(s_w, lc, j);
      const int64_t key = j0 + lc.col0 + 4 * j;
      sc[2 * j] = key <= last ? x.x * g.scale_log2 : neg_inf();
      sc[2 * j + 1] = key + 1 <= last ? x.y * g.scale_log2 : neg_inf();
      tmax = fmaxf(tmax, fmaxf(sc[2 * j], sc[2 * j + 1]));
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float m_new = fmaxf(m, tmax);   // finite: key 0 <= last is seen in the first tile
    const float corr = exp2f(m - m_new);  // 0 on the first tile (m = -inf)
    float psum = 0.f;
    T* p_row = p_s + (warp * kFrag + lc.row) * kPLd + lc.col0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float p0 = exp2f(sc[2 * j] - m_new), p1 = exp2f(sc[2 * j + 1] - m_new);
      psum += p0 + p1;
      store_pair(p_row + 4 * j, p0, p1);
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    l = l * corr + psum;
    m = m_new;
#pragma unroll
    for (int e = 0; e < HS / 2; ++e) o[e] *= corr;
    __syncwarp();  // P rows written by all lanes; s_w free again
    // O += P V, 64 columns at a time through the scratch.
    FragA<T> pf[kTile / kFrag];
#pragma unroll
    for (int kk = 0; kk < kTile / kFrag; ++kk)
      wmma::load_matrix_sync(pf[kk], wmma_ptr(p_s + warp * kFrag * kPLd + kk * kFrag), kPLd);
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
#pragma unroll
      for (int n = 0; n < kTile / kFrag; ++n) {
        FragC acc;
        wmma::fill_fragment(acc, 0.f);
#pragma unroll
        for (int kk = 0; kk < kTile / kFrag; ++kk) {
          FragBRow<T> vf;
          wmma::load_matrix_sync(vf, wmma_ptr(v_s + kk * kFrag * ld + ch * kTile + n * kFrag), ld);
          wmma::mma_sync(acc, pf[kk], vf, acc);
        }
        wmma::store_matrix_sync(s_w + n * kFrag, acc, kScrLd, wmma::mem_row_major);
      }
      __syncwarp();
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const float2 x = scratch_pair(s_w, lc, j);
        o[(ch * 16 + j) * 2] += x.x;
        o[(ch * 16 + j) * 2 + 1] += x.y;
      }
      __syncwarp();  // s_w is overwritten next
    }
  }
  if (i >= g.Tq) return;
  const float inv = 1.f / l;
  float* orow = out + (b * g.Tq + i) * g.C + h * HS + lc.col0;
#pragma unroll
  for (int ch = 0; ch < kChunks; ++ch)
#pragma unroll
    for (int j = 0; j < 16; ++j)
      *reinterpret_cast<float2*>(orow + ch * kTile + 4 * j) =
          make_float2(o[(ch * 16 + j) * 2] * inv, o[(ch * 16 + j) * 2 + 1] * inv);
  if (lc.col0 == 0) lse[bh * g.Tq + i] = (m + log2f(l)) * kLn2;
#endif
}

// ---- backward ----

// delta[bh * T + i] = round(dout_i) . out_i over the head's dims: one warp per row.
template <class T>
__global__ void tc_delta_kernel(Geo g, int hs, const float* out, const float* dout, float* delta,
                                int64_t rows) {
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (r >= rows) return;
  const int lane = int(threadIdx.x) % kWarp;
  const int64_t bh = r / g.Tq, i = r % g.Tq, b = bh / g.H, h = bh % g.H;
  const int64_t off = (b * g.Tq + i) * g.C + h * hs;
  float acc = 0.f;
  for (int d = lane; d < hs; d += kWarp) acc += round_to<T>(dout[off + d]) * out[off + d];
  acc = warp_sum(acc);
  if (lane == 0) delta[r] = acc;
}

// Stores a warp's [16][hs] f32 accumulators (times mul) into rows of an f32 [.., ld_out] array
// at dst (row i of the lane: valid when it is a row of the array), through the scratch s_w.
template <int HS>
__device__ void store_rows(FragC (&acc)[HS / kFrag], float mul, float* s_w, const LaneCols& lc,
                           float* dst_row, bool valid) {
#pragma unroll
  for (int ch = 0; ch < HS / kTile; ++ch) {
    __syncwarp();  // s_w's previous contents are read
#pragma unroll
    for (int n = 0; n < kTile / kFrag; ++n)
      wmma::store_matrix_sync(s_w + n * kFrag, acc[ch * (kTile / kFrag) + n], kScrLd,
                              wmma::mem_row_major);
    __syncwarp();
    if (valid) {
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const float2 x = scratch_pair(s_w, lc, j);
        *reinterpret_cast<float2*>(dst_row + ch * kTile + lc.col0 + 4 * j) =
            make_float2(x.x * mul, x.y * mul);
      }
    }
  }
}

// dq_i = scale sum_j dS_ij k_j over the keys j <= offset + i; one block per query tile.
template <class T, int HS>
__global__ void __launch_bounds__(kBlock)
    tc_dq_kernel(Geo g, const T* q, const T* kv, const float* lse, const float* delta,
                 const float* dout, float* dq_out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  TS_DYNAMIC_SHARED(unsigned char, smem);
  constexpr int ld = tile_ld(HS);
  T* q_s = reinterpret_cast<T*>(smem);
  T* do_s = reinterpret_cast<T*>(smem + tile_bytes(HS));
  T* k_s = reinterpret_cast<T*>(smem + 2 * tile_bytes(HS));
  T* v_s = reinterpret_cast<T*>(smem + 3 * tile_bytes(HS));
  T* ds_s = reinterpret_cast<T*>(smem + 4 * tile_bytes(HS));
  float* s_scr = reinterpret_cast<float*>(smem + 4 * tile_bytes(HS) + kPBytes);
  float* dp_scr = reinterpret_cast<float*>(smem + 4 * tile_bytes(HS) + kPBytes + kScratchBytes);
  const int warp = int(threadIdx.x) / kWarp;
  const LaneCols lc;
  float* s_w = s_scr + warp * kFrag * kScrLd;
  float* dp_w = dp_scr + warp * kFrag * kScrLd;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const int64_t q0 = reversed_tile();
  const T* kv_base = kv_head_base<HS>(kv + b * g.Tk * g.kv_row, g, h);

  load_tile<HS>(q + b * g.Tq * g.q_row, g.q_row, g.Tq, q0, h * HS, q_s);
  load_dout_tile<HS>(dout + b * g.Tq * g.C, g, q0, h * HS, do_s);
  const int64_t i = q0 + warp * kFrag + lc.row;
  const bool valid = i < g.Tq;
  const int64_t last = valid ? g.offset + i : -1;  // rows past Tq see no key: P = dS = 0
  const float lse2 = valid ? lse[bh * g.Tq + i] * kLog2e : 0.f;
  const float delta_i = valid ? delta[bh * g.Tq + i] : 0.f;
  FragC dq[HS / kFrag];
#pragma unroll
  for (int n = 0; n < HS / kFrag; ++n) wmma::fill_fragment(dq[n], 0.f);

  const int64_t key_end = g.offset + q0 + kTile < g.Tk ? g.offset + q0 + kTile : g.Tk;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // the previous K/V tiles are no longer read
    load_tile<HS>(kv_base, g.kv_row, g.Tk, j0, g.k_col, k_s);
    load_tile<HS>(kv_base, g.kv_row, g.Tk, j0, g.v_col, v_s);
    __syncthreads();  // (the first time also publishes q_s and do_s)
    // S = Q K^T and dP = dO V^T for the warp's 16 rows.
#pragma unroll
    for (int n = 0; n < kTile / kFrag; ++n) {
      FragC acc;
      mma_abt<HS>(acc, q_s + warp * kFrag * ld, ld, k_s + n * kFrag * ld, ld);
      wmma::store_matrix_sync(s_w + n * kFrag, acc, kScrLd, wmma::mem_row_major);
      mma_abt<HS>(acc, do_s + warp * kFrag * ld, ld, v_s + n * kFrag * ld, ld);
      wmma::store_matrix_sync(dp_w + n * kFrag, acc, kScrLd, wmma::mem_row_major);
    }
    __syncwarp();
    // dS = P (dP - delta), P = exp(s - lse), zero where masked (a select: the scratch of a
    // masked entry may hold anything).
    T* ds_row = ds_s + (warp * kFrag + lc.row) * kPLd + lc.col0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float2 s = scratch_pair(s_w, lc, j), dp = scratch_pair(dp_w, lc, j);
      const int64_t key = j0 + lc.col0 + 4 * j;
      const float ds0 = key <= last ? exp2f(s.x * g.scale_log2 - lse2) * (dp.x - delta_i) : 0.f;
      const float ds1 = key + 1 <= last ? exp2f(s.y * g.scale_log2 - lse2) * (dp.y - delta_i) : 0.f;
      store_pair(ds_row + 4 * j, ds0, ds1);
    }
    __syncwarp();
    // dQ += dS K (the warp's dS rows against the whole K tile).
#pragma unroll
    for (int kk = 0; kk < kTile / kFrag; ++kk) {
      FragA<T> dsf;
      wmma::load_matrix_sync(dsf, wmma_ptr(ds_s + warp * kFrag * kPLd + kk * kFrag), kPLd);
#pragma unroll
      for (int n = 0; n < HS / kFrag; ++n) {
        FragBRow<T> kf;
        wmma::load_matrix_sync(kf, wmma_ptr(k_s + kk * kFrag * ld + n * kFrag), ld);
        wmma::mma_sync(dq[n], dsf, kf, dq[n]);
      }
    }
  }
  store_rows<HS>(dq, g.scale, s_w, lc, dq_out + (b * g.Tq + i) * g.q_row + h * HS, valid);
#endif
}

// dv_j = sum_i P_ij dO_i, dk_j = scale sum_i dS_ij q_i over the queries at positions >= j of
// every query head of the kv head's group (none for keys past the last query: zero); one block per
// (key tile, batch * kv head), walking the group's heads in order into the same accumulators (no
// atomics, a fixed order).
template <class T, int HS>
__global__ void __launch_bounds__(kBlock)
    tc_dkv_kernel(Geo g, const T* q, const T* kv, const float* lse, const float* delta,
                  const float* dout, float* dkv) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  TS_DYNAMIC_SHARED(unsigned char, smem);
  constexpr int ld = tile_ld(HS);
  unsigned char* at = smem;
  T* k_s = reinterpret_cast<T*>(at);
  T* v_s = reinterpret_cast<T*>(at += tile_bytes(HS));
  T* q_s = reinterpret_cast<T*>(at += tile_bytes(HS));
  T* do_s = reinterpret_cast<T*>(at += tile_bytes(HS));
  T* pt_s = reinterpret_cast<T*>(at += tile_bytes(HS));
  T* dst_s = reinterpret_cast<T*>(at += kPBytes);
  float* s_scr = reinterpret_cast<float*>(at += kPBytes);
  float* dp_scr = reinterpret_cast<float*>(at += kScratchBytes);
  float* lse_s = reinterpret_cast<float*>(at += kScratchBytes);  // times log2(e)
  float* delta_s = reinterpret_cast<float*>(at += kRowBytes);
  const int warp = int(threadIdx.x) / kWarp;
  const LaneCols lc;
  float* s_w = s_scr + warp * kFrag * kScrLd;
  float* dp_w = dp_scr + warp * kFrag * kScrLd;
  const int64_t Hkv = g.H / g.group;
  const int64_t bk = blockIdx.y, b = bk / Hkv, kvh = bk % Hkv;
  const int64_t j0 = int64_t(blockIdx.x) * kTile;  // the first (heaviest) key tiles start first
  const T* q_b = q + b * g.Tq * g.q_row;
  const T* kv_b = kv + b * g.Tk * g.kv_row;
  const float* dout_b = dout + b * g.Tq * g.C;
  const int64_t kc = g.k_col + kvh * HS, vc = g.v_col + kvh * HS;

  load_tile<HS>(kv_b, g.kv_row, g.Tk, j0, kc, k_s);
  load_tile<HS>(kv_b, g.kv_row, g.Tk, j0, vc, v_s);
  const int64_t j = j0 + warp * kFrag + lc.row;  // this lane's key row
  FragC dk[HS / kFrag], dv[HS / kFrag];
#pragma unroll
  for (int n = 0; n < HS / kFrag; ++n) {
    wmma::fill_fragment(dk[n], 0.f);
    wmma::fill_fragment(dv[n], 0.f);
  }

  // The first query row that sees key j0 (its tiles start there, not 64-aligned if offset isn't).
  const int64_t first_query = j0 > g.offset ? j0 - g.offset : 0;
  for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
    const int64_t bh = b * g.H + h;
    for (int64_t i0 = first_query; i0 < g.Tq; i0 += kTile) {
      __syncthreads();  // the previous Q/dO tiles and row values are no longer read
      load_tile<HS>(q_b, g.q_row, g.Tq, i0, h * HS, q_s);
      load_dout_tile<HS>(dout_b, g, i0, h * HS, do_s);
      if (threadIdx.x < kTile) {
        const int64_t t = i0 + threadIdx.x;
        lse_s[threadIdx.x] = t < g.Tq ? lse[bh * g.Tq + t] * kLog2e : 0.f;
        delta_s[threadIdx.x] = t < g.Tq ? delta[bh * g.Tq + t] : 0.f;
      }
      __syncthreads();  // (the first time also publishes k_s and v_s)
      // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys against the 64 queries. (Not
      // unrolled: with the 2 x hs / 16 accumulators live, unrolling spills at hs = 128.)
#pragma unroll 1
      for (int n = 0; n < kTile / kFrag; ++n) {
        FragC acc;
        mma_abt<HS>(acc, k_s + warp * kFrag * ld, ld, q_s + n * kFrag * ld, ld);
        wmma::store_matrix_sync(s_w + n * kFrag, acc, kScrLd, wmma::mem_row_major);
        mma_abt<HS>(acc, v_s + warp * kFrag * ld, ld, do_s + n * kFrag * ld, ld);
        wmma::store_matrix_sync(dp_w + n * kFrag, acc, kScrLd, wmma::mem_row_major);
      }
      __syncwarp();
      // P^T and dS^T, column c being query i0 + c: visible when j <= offset + i and i < Tq.
      T* pt_row = pt_s + (warp * kFrag + lc.row) * kPLd + lc.col0;
      T* dst_row = dst_s + (warp * kFrag + lc.row) * kPLd + lc.col0;
#pragma unroll 2  // (fully unrolled, the hoisted loads spill at hs = 128 next to dk and dv)
      for (int jj = 0; jj < 16; ++jj) {
        const int c = lc.col0 + 4 * jj;
        const float2 s = scratch_pair(s_w, lc, jj), dp = scratch_pair(dp_w, lc, jj);
        const float2 l2 = *reinterpret_cast<const float2*>(lse_s + c);
        const float2 dl = *reinterpret_cast<const float2*>(delta_s + c);
        const int64_t i = i0 + c;
        const bool vis0 = g.offset + i >= j && i < g.Tq;
        const bool vis1 = g.offset + i + 1 >= j && i + 1 < g.Tq;
        const float p0 = vis0 ? exp2f(s.x * g.scale_log2 - l2.x) : 0.f;
        const float p1 = vis1 ? exp2f(s.y * g.scale_log2 - l2.y) : 0.f;
        store_pair(pt_row + 4 * jj, p0, p1);
        store_pair(dst_row + 4 * jj, vis0 ? p0 * (dp.x - dl.x) : 0.f,
                   vis1 ? p1 * (dp.y - dl.y) : 0.f);
      }
      __syncwarp();
      // dV += P^T dO, then dK += dS^T Q (the warp's 16 keys against the 64 queries). Two passes,
      // not unrolled over kk: with dk and dv live (128 registers at hs = 128) anything more
      // hoisted spills (ptxas -v: 254 registers, no spills, for bf16 at hs = 128).
#pragma unroll 1
      for (int kk = 0; kk < kTile / kFrag; ++kk) {
        FragA<T> pf;
        wmma::load_matrix_sync(pf, wmma_ptr(pt_s + warp * kFrag * kPLd + kk * kFrag), kPLd);
#pragma unroll
        for (int n = 0; n < HS / kFrag; ++n) {
          FragBRow<T> bf;
          wmma::load_matrix_sync(bf, wmma_ptr(do_s + kk * kFrag * ld + n * kFrag), ld);
          wmma::mma_sync(dv[n], pf, bf, dv[n]);
        }
      }
#pragma unroll 1
      for (int kk = 0; kk < kTile / kFrag; ++kk) {
        FragA<T> dsf;
        wmma::load_matrix_sync(dsf, wmma_ptr(dst_s + warp * kFrag * kPLd + kk * kFrag), kPLd);
#pragma unroll
        for (int n = 0; n < HS / kFrag; ++n) {
          FragBRow<T> bf;
          wmma::load_matrix_sync(bf, wmma_ptr(q_s + kk * kFrag * ld + n * kFrag), ld);
          wmma::mma_sync(dk[n], dsf, bf, dk[n]);
        }
      }
    }
  }
  const bool valid = j < g.Tk;
  float* drow = dkv + (b * g.Tk + j) * g.kv_row;
  store_rows<HS>(dk, g.scale, s_w, lc, drow + kc, valid);
  store_rows<HS>(dv, 1.f, s_w, lc, drow + vc, valid);
#endif
}

}  // namespace
}  // namespace tessera::cuda
