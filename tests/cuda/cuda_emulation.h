// A host emulation of the CUDA built-ins and of the WMMA API, just enough to run device code
// written for them (src/kernels/cuda/attention_tc_kernels.cuh) with the host compiler on a
// machine without a GPU: one std::thread per CUDA thread, barriers for __syncthreads and
// __syncwarp, shuffles through a shared array, and WMMA fragments held as plain 16x16 f32
// matrices. It checks what the real WMMA requires (32-byte aligned pointers, ldm a multiple of
// 16 bytes) and aborts, naming the call, where a kernel breaks it.
//
// Fragments are only ever filled, loaded, multiplied and stored by the kernels emulated here
// (never read element by element), and a store is done by lane 0 alone, so lane 0 computes and
// the other lanes skip (their copies stay unused). Products are exact, sums in f32 in k order:
// the numbers of a tensor core up to its accumulation order.
//
// Include this first (it defines __device__ & co. before the CUDA headers do) and only in a
// test of its own: it defines threadIdx, blockIdx, gridDim and blockDim as macros.
#pragma once
#define __device__
#define __global__
#define __shared__
#define __host__
#include <cuda_runtime.h>
#include <vector_functions.h>
#undef __launch_bounds__
#define __launch_bounds__(...)

#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "core/half.h"

namespace cuda_emulation {
inline thread_local uint3 thread_idx, block_idx;
inline dim3 grid_dim, block_dim;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline float exchange_f32[1024];
inline double exchange_f64[1024];

[[noreturn]] inline void violation(const char* what, const void* p, unsigned ldm) {
  std::fprintf(stderr, "cuda_emulation: %s (pointer %p, ldm %u, thread %u of block %u,%u)\n", what,
               p, ldm, thread_idx.x, block_idx.x, block_idx.y);
  std::abort();
}

template <class V>
V shuffle_xor(V v, int mask, V* exchange);
}  // namespace cuda_emulation

#define threadIdx (::cuda_emulation::thread_idx)
#define blockIdx (::cuda_emulation::block_idx)
#define gridDim (::cuda_emulation::grid_dim)
#define blockDim (::cuda_emulation::block_dim)

inline void __syncthreads() {
  cuda_emulation::block_barrier->arrive_and_wait();
}
inline void __syncwarp(unsigned = 0xffffffffu) {
  cuda_emulation::warp_barriers[cuda_emulation::thread_idx.x / 32]->arrive_and_wait();
}
template <class V>
V cuda_emulation::shuffle_xor(V v, int mask, V* exchange) {
  const unsigned t = thread_idx.x;
  __syncwarp();
  exchange[t] = v;
  __syncwarp();
  const V r = exchange[(t & ~31u) | ((t & 31u) ^ unsigned(mask))];
  __syncwarp();
  return r;
}
inline float __shfl_xor_sync(unsigned, float v, int mask) {
  return cuda_emulation::shuffle_xor(v, mask, cuda_emulation::exchange_f32);
}
inline double __shfl_xor_sync(unsigned, double v, int mask) {
  return cuda_emulation::shuffle_xor(v, mask, cuda_emulation::exchange_f64);
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}

// CUDA's 16-bit types as WMMA reads them: the same bits as Tessera's.
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  uint16_t bits;
};

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "only 16x16x16 is emulated");
  float v[16][16];
};

namespace detail {
inline bool lane0() {
  return cuda_emulation::thread_idx.x % 32 == 0;
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
    cuda_emulation::violation(call, p, ldm);  // "mptr must be 256-bit aligned"
  if (ldm * elem % 16 != 0) cuda_emulation::violation(call, p, ldm);  // ldm: 16-byte multiple
}
}  // namespace detail

template <class F>
void fill_fragment(F& f, float x) {
  if (!detail::lane0()) return;
  for (auto& row : f.v)
    for (float& e : row) e = x;
}

// Element (r, c) of the fragment at p[r * ldm + c] (row_major) or p[c * ldm + r] (col_major).
template <class Use, class T, class L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  detail::check(p, ldm, sizeof(T), "load_matrix_sync: misaligned pointer or ldm");
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
  std::memcpy(d.v, t, sizeof t);
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
  detail::check(p, ldm, sizeof(float), "store_matrix_sync: misaligned pointer or ldm");
  if (!detail::lane0()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) p[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.v[r][c];
}
}  // namespace nvcuda::wmma

namespace cuda_emulation {
// kernel<<<grid, threads>>>(args...): the blocks one after another (a kernel's dynamic shared
// memory is one array, shared by all of them), the threads of a block concurrently.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, unsigned threads, A... args) {
  grid_dim = grid;
  block_dim = dim3(threads);
  for (unsigned y = 0; y < grid.y; ++y)
    for (unsigned x = 0; x < grid.x; ++x) {
      std::barrier<> block(threads);
      block_barrier = &block;
      warp_barriers.clear();
      for (unsigned w = 0; w < threads / 32; ++w)
        warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([=] {
          thread_idx = make_uint3(t, 0, 0);
          block_idx = make_uint3(x, y, 0);
          kernel(P(args)...);
        });
      for (std::thread& th : pool) th.join();
      block_barrier = nullptr;
    }
}
}  // namespace cuda_emulation
