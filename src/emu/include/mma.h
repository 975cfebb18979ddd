// Emulated CUDA device (src/emu): the WMMA API (nvcuda::wmma) for 16x16x16 tiles with bf16 /
// f16 operands and f32 accumulators, as the tensor-core attention kernels use it.
//
// A fragment is a plain 16x16 f32 matrix per lane. WMMA's element-to-lane layout is opaque, and
// Tessera's kernels only fill, load, multiply and store fragments (never index them), so lane 0
// of each warp does the work and the other lanes keep unused copies; stores come from lane 0
// alone. Products are exact and sums in f32 in k order: a tensor core's numbers up to its
// accumulation order. What WMMA requires of memory is checked (a 32-byte aligned pointer, ldm a
// multiple of 16 bytes) and a violation is a device fault naming the call.
#pragma once
#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "emu/device.h"
#include "emu/kernel.h"

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulated WMMA has 16x16x16 tiles only");
  float v[16][16];
};

namespace detail {
inline bool lane0() {
  return tessera::emu::linear_thread() % 32 == 0;
}
inline float widen(__nv_bfloat16 x) {
  return tessera::bf16_to_float(tessera::bf16{x.bits});
}
inline float widen(__half x) {
  return tessera::f16_to_float(tessera::f16{x.bits});
}
inline float widen(float x) {
  return x;
}
inline void check(const void* p, unsigned ldm, size_t elem, const char* call) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    throw tessera::emu::DeviceFault(cudaErrorLaunchFailure,
                                    std::string(call) + ": pointer not 32-byte aligned");
  if (ldm * elem % 16 != 0)
    throw tessera::emu::DeviceFault(
        cudaErrorLaunchFailure,
        std::string(call) + ": ldm " + std::to_string(ldm) + " is not a multiple of 16 bytes");
}
}  // namespace detail

template <class F>
void fill_fragment(F& f, float x) {
  if (!detail::lane0()) return;
  for (auto& row : f.v)
    for (float& e : row) e = x;
}

// Element (r, c) of the fragment is p[r * ldm + c] (row_major) or p[c * ldm + r] (col_major).
template <class Use, class T, class L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  detail::check(p, ldm, sizeof(T), "wmma::load_matrix_sync");
  if (!detail::lane0()) return;
  constexpr bool rm = std::is_same_v<L, row_major>;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = detail::widen(rm ? p[r * ldm + c] : p[c * ldm + r]);
}

template <class TA, class LA, class TB, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  if (!detail::lane0()) return;
  float t[16][16];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float s = c.v[m][n];
      for (int k = 0; k < 16; ++k) s += a.v[m][k] * b.v[k][n];
      t[m][n] = s;
    }
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) d.v[m][n] = t[m][n];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
  detail::check(p, ldm, sizeof(float), "wmma::store_matrix_sync");
  if (!detail::lane0()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) p[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.v[r][c];
}
}  // namespace nvcuda::wmma
