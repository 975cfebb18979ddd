// Causal attention, forward and backward, as blocked tile GEMMs inside one fused kernel.
//
// Why a hand-written fused kernel rather than oneDNN GEMMs (cpu::gemm) on packed [T, hs]
// buffers: at GPT-2 small sizes (T = 64..256, hs = 64) the per-(b, h) products are tiny
// (256 x 256 x 64), and a batched call over B*H needs the full [B*H, T, T] score tensor (25 MB
// at B = 8, T = 256) plus a softmax pass over it through memory; both compute the upper triangle
// that the causal mask throws away (half the FLOPs). The fused kernel skips key blocks past the
// diagonal, keeps scores in a cache-resident [32, T] block per thread and exponentiates with a
// vectorised exp. Measured on the AVX-512 build machine, C = 768, 12 heads, 1 thread
// (forward / backward, ms): B=8 T=256 fused 8.3 / 18 vs batched oneDNN 13.3 / 32;
// B=4 T=64 0.40 / 0.77 vs 0.46 / 0.97; B=1 T=1024 11.8 / 29 vs 22 / 53. Same ratios on 2 threads.
// The tile GEMMs run at ~110 GFLOP/s on one core, about 3/4 of the total time.
//
// Work is split over (batch, head) pairs with OpenMP: each pair packs its q (pre-scaled), k and
// v into padded per-thread buffers (head size and T rounded up to 16 lanes, pads zeroed), then
// walks blocks of kBlockQ query rows. Memory per thread is O(T * hs); nothing O(T^2) survives.
#include "kernels/cpu/attention.h"
#include "core/profiler.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#if defined(__AVX512F__)
// GCC 12 flags the intrinsics' internal _mm512_undefined_ps() as uninitialised (a known false
// positive of the header, not of this file).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
// Without AVX-512 GCC warns that passing 64-byte vectors by value has no stable ABI; the tile
// helpers below are internal and inlined, so no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include "core/error.h"

namespace tessera::cpu {
namespace {

// ---- tile math: GCC/Clang vector extensions, 16 f32 lanes (one AVX-512 register) ----
namespace tile {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

inline v16 load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, const v16& v) {
  std::memcpy(p, &v, sizeof v);
}
inline v16 splat(float x) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(x);
#else
  return v16{} + x;
#endif
}
// a * b + c. ISO C++ mode compiles with -ffp-contract=off, so fuse explicitly where we can.
inline v16 fmadd(const v16& a, const v16& b, const v16& c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}
inline float hsum(const v16& v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}
inline float hmax(const v16& v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, v[i]);
  return m;
}

// e^x for x <= ~0 (a stable softmax's arguments): Cephes-style range reduction x = n ln2 + r,
// |r| <= ln2/2, degree-6 polynomial for e^r, times 2^n built in the exponent bits. Relative
// error ~2 ulp; below -87 (and for -inf) returns 0; NaN propagates.
inline v16 exp_nonpos(const v16& x0) {
  const v16 lo = splat(-87.f);
  const v16i under = x0 < lo;
  const v16 x = under ? lo : x0;
  const v16 magic = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer
  const v16 t = x * 1.44269504088896341f + magic;
  const v16 n = t - magic;
  const v16i ni = (v16i)t - (v16i)magic;
  const v16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  v16 p = splat(1.9875691500e-4f);
  p = fmadd(p, r, splat(1.3981999507e-3f));
  p = fmadd(p, r, splat(8.3334519073e-3f));
  p = fmadd(p, r, splat(4.1665795894e-2f));
  p = fmadd(p, r, splat(1.6666665459e-1f));
  p = fmadd(p, r, splat(5.0000001201e-1f));
  const v16 e = fmadd(p, r * r, r) + 1.f;
  const v16 y = e * (v16)((ni + 127) << 23);
  return under ? v16{} : y;
}

// C[MR, 16 NV] (+)= op(A)[MR, K] · B[K, 16 NV]: MR x NV accumulators live in registers.
// op(A) is A [M, K] or, with TA, the transpose of A stored [K, M] (saves transposing A).
template <bool TA, int MR, int NV>
void micro(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
           int64_t ldc, bool accumulate) {
  v16 c[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = accumulate ? load(C + r * ldc + v * kLanes) : v16{};
  for (int64_t k = 0; k < K; ++k) {
    // Each B vector is loaded once and each A element broadcast once per k: 1 load per
    // MR FMAs keeps the loop FMA-bound rather than load-bound.
    v16 a[MR];
    for (int r = 0; r < MR; ++r) a[r] = splat(TA ? A[k * lda + r] : A[r * lda + k]);
    for (int v = 0; v < NV; ++v) {
      const v16 b = load(B + k * ldb + v * kLanes);
      for (int r = 0; r < MR; ++r) c[r][v] = fmadd(a[r], b, c[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store(C + r * ldc + v * kLanes, c[r][v]);
}

using MicroFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
                         bool);
constexpr int kMaxRows = 4, kMaxVecs = 4;  // 16 accumulators + 4 B vectors + 1 broadcast
template <bool TA>
constexpr MicroFn kMicro[kMaxRows][kMaxVecs] = {
    {micro<TA, 1, 1>, micro<TA, 1, 2>, micro<TA, 1, 3>, micro<TA, 1, 4>},
    {micro<TA, 2, 1>, micro<TA, 2, 2>, micro<TA, 2, 3>, micro<TA, 2, 4>},
    {micro<TA, 3, 1>, micro<TA, 3, 2>, micro<TA, 3, 3>, micro<TA, 3, 4>},
    {micro<TA, 4, 1>, micro<TA, 4, 2>, micro<TA, 4, 3>, micro<TA, 4, 4>},
};

// C[M, N] (+)= op(A) · B, row-major with leading dims; N a multiple of 16. op(A) is A [M, K],
// or (trans_a) A stored as [K, M].
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool trans_a,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  for (int64_t j = 0; j < N; j += kMaxVecs * kLanes) {
    const int64_t nv = std::min<int64_t>(kMaxVecs, (N - j) / kLanes);
    for (int64_t i = 0; i < M; i += kMaxRows) {
      const int64_t mr = std::min<int64_t>(kMaxRows, M - i);
      const MicroFn f = trans_a ? kMicro<true>[mr - 1][nv - 1] : kMicro<false>[mr - 1][nv - 1];
      f(K, trans_a ? A + i : A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    }
  }
}

// The helpers below take rows whose length n is a multiple of 16.
float row_max(const float* row, int64_t n) {
  v16 m = load(row);
  for (int64_t j = kLanes; j < n; j += kLanes) {
    const v16 x = load(row + j);
    m = x > m ? x : m;
  }
  return hmax(m);
}

// row <- exp(row - shift); returns the sum of the new row.
float exp_shift_sum(float* row, int64_t n, float shift) {
  v16 s{};
  for (int64_t j = 0; j < n; j += kLanes) {
    const v16 e = exp_nonpos(load(row + j) - shift);
    store(row + j, e);
    s += e;
  }
  return hsum(s);
}

void scale_row(float* row, int64_t n, float a) {
  for (int64_t j = 0; j < n; j += kLanes) store(row + j, load(row + j) * a);
}

// dst[16 x 16] (stride ldd) = transpose of src[16 x 16] (stride lds).
void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
#if defined(__AVX512F__)
  // Four rounds of pairwise interleaves, each doubling the size of the transposed blocks:
  // 1x1 (unpack ps), 2x2 (unpack pd), 4x4 and 8x8 (128-bit lane shuffles).
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int j = 0; j < 2; ++j) {
      const __m512d a = _mm512_castps_pd(t[i + j]), b = _mm512_castps_pd(t[i + j + 2]);
      r[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
  for (int k = 0; k < 16; ++k) _mm512_storeu_ps(dst + k * ldd, r[k]);  // r[k] = column k
#else
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) dst[j * ldd + i] = src[i * lds + j];
#endif
}

// dp <- p * (dp - delta): the softmax Jacobian applied to a row of dL/dP.
void softmax_grad_row(const float* p, float* dp, int64_t n, float delta) {
  for (int64_t j = 0; j < n; j += kLanes) store(dp + j, load(p + j) * (load(dp + j) - delta));
}

}  // namespace tile

using tile::kLanes;

constexpr int64_t kBlockQ = 32;  // query rows per block: a [32, T] score block stays in L1/L2
// Below this many score entries times head size (~multiply-adds) one thread does all the work:
// starting a parallel region costs more than the attention itself.
constexpr int64_t kParallelWork = int64_t(1) << 20;

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

// Zero-initialised, 64-byte aligned scratch owned by one thread.
class Scratch {
 public:
  explicit Scratch(int64_t floats)
      : bytes_(size_t(round_up(std::max<int64_t>(floats, 1), 16)) * 4) {
    p_.reset(static_cast<float*>(std::aligned_alloc(64, bytes_)));
    TS_ASSERT(p_ != nullptr);
    std::memset(p_.get(), 0, bytes_);
  }
  float* get() const { return p_.get(); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  size_t bytes_;  // a multiple of the 64-byte alignment, as aligned_alloc requires
  std::unique_ptr<float, Free> p_;
};

// Geometry of one (batch, head) pair inside q, kv and out, and the padded packing sizes.
struct Head {
  int64_t Tq, Tk, offset;  // query rows, key rows, the position of query row 0
  int64_t seen;            // keys some query sees: offset + Tq (the rest get zero dk, dv)
  int64_t C, hs, hsp;      // hsp: hs rounded up to whole vectors
  int64_t Tqp, Tkp;        // Tq and seen rounded up to whole vectors
  int64_t q_row, kv_row;   // row strides of q and kv
  int64_t k_col, v_col;    // where the k and v heads start in a kv row
  int64_t group;           // query heads per kv head
  float scale;
};

Head head_geometry(const kernels::AttentionWindowDims& d) {
  TS_CHECK(kernels::attention_dims_valid(d),
           "cpu attention: channels {}, heads {}, kv_heads {}: expected heads > 0 dividing "
           "channels and kv_heads > 0 dividing heads",
           d.channels, d.heads, d.kv_heads);
  TS_CHECK(kernels::attention_window_valid(d),
           "cpu attention: batch {}, {} queries at offset {}, {} keys: expected sizes >= 0 and "
           "keys >= offset + queries",
           d.batch, d.q_seq, d.q_offset, d.kv_seq);
  Head h;
  h.Tq = d.q_seq, h.Tk = d.kv_seq, h.offset = d.q_offset, h.seen = d.q_offset + d.q_seq;
  h.C = d.channels, h.hs = kernels::attention_head_size(d), h.hsp = round_up(h.hs, kLanes);
  h.Tqp = round_up(h.Tq, kLanes), h.Tkp = round_up(h.seen, kLanes);
  h.q_row = d.q_row, h.kv_row = d.kv_row;
  h.k_col = d.kv_col, h.v_col = d.kv_col + kernels::attention_kv_channels(d);
  h.group = kernels::attention_group(d);
  h.scale = 1.f / std::sqrt(float(h.hs));
  return h;
}

// The first q, k and v elements of query head h of batch b (k and v: its kv head's).
struct HeadInputs {
  const float *q, *k, *v;
};
HeadInputs head_inputs(const Head& g, const float* q, const float* kv, int64_t b, int64_t h) {
  const float* kv_row0 = kv + b * g.Tk * g.kv_row + h / g.group * g.hs;
  return {q + b * g.Tq * g.q_row + h * g.hs, kv_row0 + g.k_col, kv_row0 + g.v_col};
}

// A packed [rows_p, hsp] buffer holding `rows` rows; pads zero.
struct Packed {
  int64_t rows, rows_p;
};
Packed q_rows(const Head& g) {
  return {g.Tq, g.Tqp};
}
Packed key_rows(const Head& g) {
  return {g.seen, g.Tkp};
}

// dst [rows_p, hsp] = src rows (stride ld, hs wide) * s; pad rows and columns zero.
void pack_rows(const Head& g, Packed n, const float* src, int64_t ld, float s, float* dst) {
  for (int64_t t = 0; t < n.rows_p; ++t) {
    float* o = dst + t * g.hsp;
    if (t < n.rows) {
      const float* i = src + t * ld;
      for (int64_t c = 0; c < g.hs; ++c) o[c] = s * i[c];
      for (int64_t c = g.hs; c < g.hsp; ++c) o[c] = 0.f;
    } else {
      std::memset(o, 0, size_t(g.hsp) * 4);
    }
  }
}

// dst [hsp, rows_p] = transpose of a packed [rows_p, hsp] buffer (both padded to whole 16 x 16
// tiles, so there are no edges). The source is already in cache, fresh from pack_rows.
void transpose_packed(const Head& g, Packed n, const float* src, float* dst) {
  for (int64_t t0 = 0; t0 < n.rows_p; t0 += kLanes)
    for (int64_t c0 = 0; c0 < g.hsp; c0 += kLanes)
      tile::transpose16(src + t0 * g.hsp + c0, g.hsp, dst + c0 * n.rows_p + t0, n.rows_p);
}

// Sets row[last+1, n) to -inf: keys after the query are masked out (n is a multiple of 16).
void mask_after(float* row, int64_t last, int64_t n) {
  for (int64_t j = last + 1; j < n; ++j) row[j] = -std::numeric_limits<float>::infinity();
}

// Query rows [i0, i0 + m) see keys [0, offset + i0 + m): padded, the width of their score rows.
int64_t visible_keys(const Head& g, int64_t i0, int64_t m) {
  return round_up(g.offset + i0 + m, kLanes);
}

// Where a query head's dk and dv rows go. With one query head per kv head, straight into
// dkv's k and v columns. With groups of G > 1, into per-query-head buffers (partials: dk
// [B*H, seen, hs], then dv the same), so that the heads still run in parallel without sharing an
// output; sum_group_partials then adds each group's G buffers in head order: a fixed order, no
// atomics, the same bits for any thread count.
struct KvGradTarget {
  float *dk, *dv;
  int64_t ld;  // row stride
};

KvGradTarget kv_grad_target(const Head& g, float* dkv, float* partials, int64_t pairs, int64_t b,
                            int64_t h, int64_t bh) {
  if (g.group == 1) {
    float* row0 = dkv + b * g.Tk * g.kv_row + h * g.hs;
    return {row0 + g.k_col, row0 + g.v_col, g.kv_row};
  }
  const int64_t n = g.seen * g.hs;
  return {partials + bh * n, partials + (pairs + bh) * n, g.hs};
}

void sum_group_partials(const Head& g, int64_t B, int64_t H, const float* partials, float* dkv,
                        bool parallel) {
  const int64_t Hkv = H / g.group, n = g.seen * g.hs, pairs = B * H;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bk = 0; bk < B * Hkv; ++bk) {
    const int64_t b = bk / Hkv, kv = bk % Hkv;
    for (int64_t which = 0; which < 2; ++which) {  // dk, then dv
      const float* first = partials + (which * pairs + b * H + kv * g.group) * n;
      float* dst = dkv + b * g.Tk * g.kv_row + (which ? g.v_col : g.k_col) + kv * g.hs;
      for (int64_t t = 0; t < g.seen; ++t) {
        float* o = dst + t * g.kv_row;
        const float* src = first + t * g.hs;
        std::memcpy(o, src, size_t(g.hs) * 4);
        for (int64_t m = 1; m < g.group; ++m) {
          src += n;
#pragma omp simd
          for (int64_t c = 0; c < g.hs; ++c) o[c] += src[c];
        }
      }
    }
  }
}

// Keys past the last query's position: no query sees them, so their dk and dv are zero.
void zero_unseen_keys(const Head& g, int64_t B, int64_t kv_heads, float* dkv) {
  const size_t bytes = size_t(2 * kv_heads * g.hs) * 4;  // the k heads and the v heads
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = g.seen; t < g.Tk; ++t)
      std::memset(dkv + (b * g.Tk + t) * g.kv_row + g.k_col, 0, bytes);
}

}  // namespace

void attention_window_forward(const kernels::AttentionWindowDims& d, const float* q,
                              const float* kv, float* out, float* lse) {
  prof::Scope prof_scope(prof::Family::attention, "attention_forward");
  // Useful FLOPs: QK^T and PV over the visible scores, Tq (offset + (Tq + 1) / 2) of them.
  prof::add_flops(
      prof::Family::attention,
      2.0 * double(d.batch * d.q_seq) * double(2 * d.q_offset + d.q_seq) * double(d.channels));
  const Head g = head_geometry(d);
  const int64_t H = d.heads, pairs = d.batch * H;
  const bool parallel = pairs > 1 && pairs * g.Tq * g.seen * g.hs > kParallelWork;
#pragma omp parallel if (parallel)
  {
    Scratch qs(g.Tqp * g.hsp), kt(g.hsp * g.Tkp), v(g.Tkp * g.hsp);
    Scratch s(kBlockQ * g.Tkp), o(kBlockQ * g.hsp);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < pairs; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const HeadInputs in = head_inputs(g, q, kv, b, h);
      pack_rows(g, q_rows(g), in.q, g.q_row, g.scale, qs.get());
      pack_rows(g, key_rows(g), in.k, g.kv_row, 1.f, v.get());  // k rows, borrowing v's buffer
      transpose_packed(g, key_rows(g), v.get(), kt.get());
      pack_rows(g, key_rows(g), in.v, g.kv_row, 1.f, v.get());
      for (int64_t i0 = 0; i0 < g.Tq; i0 += kBlockQ) {
        const int64_t m = std::min(kBlockQ, g.Tq - i0);
        const int64_t n = visible_keys(g, i0, m);
        // Scores S [m, n] = (q * scale) k^T.
        tile::gemm(m, n, g.hsp, qs.get() + i0 * g.hsp, g.hsp, false, kt.get(), g.Tkp, s.get(),
                   g.Tkp, false);
        for (int64_t r = 0; r < m; ++r) {
          float* row = s.get() + r * g.Tkp;
          mask_after(row, g.offset + i0 + r, n);
          const float mx = tile::row_max(row, n);
          const float sum = tile::exp_shift_sum(row, n, mx);  // row <- exp(row - mx)
          lse[bh * g.Tq + i0 + r] = mx + std::log(sum);
          // Normalise probabilities now so that P·V is the output directly.
          tile::scale_row(row, n, 1.f / sum);
        }
        // O [m, hsp] = P [m, n] · V [n, hsp].
        tile::gemm(m, g.hsp, n, s.get(), g.Tkp, false, v.get(), g.hsp, o.get(), g.hsp, false);
        for (int64_t r = 0; r < m; ++r)
          std::memcpy(out + (b * g.Tq + i0 + r) * g.C + h * g.hs, o.get() + r * g.hsp,
                      size_t(g.hs) * 4);
      }
    }
  }
}

void attention_window_backward(const kernels::AttentionWindowDims& d, const float* q,
                               const float* kv, const float* out, const float* lse,
                               const float* dout, float* dq, float* dkv) {
  prof::Scope prof_scope(prof::Family::attention, "attention_backward");
  // Useful FLOPs: dV, dP, dQ and dK over the visible scores (the recomputed ones not counted).
  prof::add_flops(
      prof::Family::attention,
      4.0 * double(d.batch * d.q_seq) * double(2 * d.q_offset + d.q_seq) * double(d.channels));
  const Head g = head_geometry(d);
  const int64_t H = d.heads, pairs = d.batch * H;
  const int64_t q_tile = g.Tqp * g.hsp, k_tile = g.Tkp * g.hsp;
  const bool parallel = pairs > 1 && pairs * g.Tq * g.seen * g.hs > kParallelWork;
  std::vector<float> partials(size_t(g.group > 1 ? 2 * pairs * g.seen * g.hs : 0));
#pragma omp parallel if (parallel)
  {
    Scratch qs(q_tile), k(k_tile), kt(k_tile), v(k_tile), vt(k_tile), dO(q_tile);
    Scratch dk(k_tile), dv(k_tile), dq_blk(kBlockQ * g.hsp);
    Scratch p(kBlockQ * g.Tkp), ds(kBlockQ * g.Tkp), delta(g.Tqp);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < pairs; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const HeadInputs in = head_inputs(g, q, kv, b, h);
      const float* dout_bh = dout + b * g.Tq * g.C + h * g.hs;
      const float* out_bh = out + b * g.Tq * g.C + h * g.hs;
      float* dq_bh = dq + b * g.Tq * g.q_row + h * g.hs;
      // q pre-scaled: S = q' k^T, dk = dS^T q'
      pack_rows(g, q_rows(g), in.q, g.q_row, g.scale, qs.get());
      pack_rows(g, key_rows(g), in.k, g.kv_row, 1.f, k.get());
      transpose_packed(g, key_rows(g), k.get(), kt.get());
      pack_rows(g, key_rows(g), in.v, g.kv_row, 1.f, v.get());
      transpose_packed(g, key_rows(g), v.get(), vt.get());
      pack_rows(g, q_rows(g), dout_bh, g.C, 1.f, dO.get());
      // delta_t = sum_j P_tj dP_tj = dO_t · O_t: the row term of the softmax backward.
      for (int64_t t = 0; t < g.Tq; ++t) {
        const float *o = out_bh + t * g.C, *go = dO.get() + t * g.hsp;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t c = 0; c < g.hs; ++c) acc += o[c] * go[c];
        delta.get()[t] = acc;
      }
      std::memset(dk.get(), 0, size_t(k_tile) * 4);
      std::memset(dv.get(), 0, size_t(k_tile) * 4);
      for (int64_t i0 = 0; i0 < g.Tq; i0 += kBlockQ) {
        const int64_t m = std::min(kBlockQ, g.Tq - i0);
        const int64_t n = visible_keys(g, i0, m);
        const float* q_blk = qs.get() + i0 * g.hsp;
        const float* do_blk = dO.get() + i0 * g.hsp;
        // Recompute P [m, n] from the saved log-sum-exp.
        tile::gemm(m, n, g.hsp, q_blk, g.hsp, false, kt.get(), g.Tkp, p.get(), g.Tkp, false);
        for (int64_t r = 0; r < m; ++r) {
          float* row = p.get() + r * g.Tkp;
          mask_after(row, g.offset + i0 + r, n);
          tile::exp_shift_sum(row, n, lse[bh * g.Tq + i0 + r]);
        }
        // dP [m, n] = dO · V^T, then dS = P * (dP - delta) in place.
        tile::gemm(m, n, g.hsp, do_blk, g.hsp, false, vt.get(), g.Tkp, ds.get(), g.Tkp, false);
        for (int64_t r = 0; r < m; ++r)
          tile::softmax_grad_row(p.get() + r * g.Tkp, ds.get() + r * g.Tkp, n, delta.get()[i0 + r]);
        // dQ [m, hsp] = dS · K * scale, written straight into dq.
        tile::gemm(m, g.hsp, n, ds.get(), g.Tkp, false, k.get(), g.hsp, dq_blk.get(), g.hsp, false);
        for (int64_t r = 0; r < m; ++r) {
          float* dst_row = dq_bh + (i0 + r) * g.q_row;
          const float* src = dq_blk.get() + r * g.hsp;
          for (int64_t c = 0; c < g.hs; ++c) dst_row[c] = g.scale * src[c];
        }
        // dV [n, hsp] += P^T · dO,  dK [n, hsp] += dS^T · q'.
        tile::gemm(n, g.hsp, m, p.get(), g.Tkp, true, do_blk, g.hsp, dv.get(), g.hsp, true);
        tile::gemm(n, g.hsp, m, ds.get(), g.Tkp, true, q_blk, g.hsp, dk.get(), g.hsp, true);
      }
      const KvGradTarget to = kv_grad_target(g, dkv, partials.data(), pairs, b, h, bh);
      for (int64_t t = 0; t < g.seen; ++t) {
        std::memcpy(to.dk + t * to.ld, dk.get() + t * g.hsp, size_t(g.hs) * 4);
        std::memcpy(to.dv + t * to.ld, dv.get() + t * g.hsp, size_t(g.hs) * 4);
      }
    }
  }
  if (g.group > 1) sum_group_partials(g, d.batch, H, partials.data(), dkv, parallel);
  zero_unseen_keys(g, d.batch, d.kv_heads, dkv);
}

void attention_forward(const kernels::AttentionDims& d, const float* qkv, float* out, float* lse) {
  attention_window_forward(kernels::attention_window_of(d), qkv, qkv, out, lse);
}

void attention_backward(const kernels::AttentionDims& d, const float* qkv, const float* out,
                        const float* lse, const float* dout, float* dqkv) {
  attention_window_backward(kernels::attention_window_of(d), qkv, qkv, out, lse, dout, dqkv, dqkv);
}

}  // namespace tessera::cpu
