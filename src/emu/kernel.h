// The device side of the emulated CUDA device: what kernel code sees (CUDA's keywords, the
// built-in index variables, barriers, warp shuffles and votes, atomics, intrinsics) and the
// launch that kernels/cuda/launch.cuh calls.
//
// Execution model (launch.cpp): a launch runs on its stream's host thread, block after block;
// the threads of a block are fibers (own stacks, switched in user space) that run until they
// reach a barrier or return. __syncthreads releases once every thread of the block that has
// not returned is waiting there; __syncwarp and every shuffle or vote, once every such lane of
// the warp is. A barrier that can never be released (threads of one block waiting at different
// barriers) is reported as a deadlock naming the kernel, the block and the threads, instead of
// hanging as a GPU would.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "emu/runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// One copy per host thread: the fibers of a block (one host thread) share it, as the threads of
// a block share shared memory; blocks run one after another, so they never overlap.
#define __shared__ static thread_local

// Built-in variables, set by the executor before it switches to a fiber.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace tessera::emu {

// Launch (kernels/cuda/launch.cuh): checks the configuration now (errors go to
// cudaGetLastError, as on a GPU) and queues the grid on `stream`.
void launch_kernel(std::string_view name, const void* kernel, dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, std::function<void()> body);

// "tessera::cuda::add_kernel<float>" for the kernel given as a template argument.
template <auto Kernel>
std::string_view kernel_name() {
  static const std::string name = [](std::string_view f) {  // "... [with auto Kernel = NAME]"
    const size_t b = f.find("Kernel = ");
    if (b == std::string_view::npos) return std::string(f);
    f.remove_prefix(b + 9);
    return std::string(f.substr(0, f.find_first_of(";]")));
  }(__PRETTY_FUNCTION__);
  return name;
}

// The running block's dynamic shared memory (128-byte aligned; filled with 0xff bytes before
// each block, so a read of shared memory never written is a NaN, not a lucky zero).
void* dynamic_shared();
void sync_block();
void sync_warp();
// __syncwarp: as sync_warp, and it orders the lanes' memory accesses (racecheck.h).
void sync_warp_fenced();
// This thread's lane slot in the warp exchange (8 bytes per thread).
uint64_t* exchange_slot(unsigned lane_in_block);
unsigned linear_thread();
[[noreturn]] void trap(const char* why);

template <class T>
T shuffle_from(T v, int src_lane, int width) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  const unsigned me = linear_thread();
  const unsigned warp_base = me & ~31u;
  const unsigned seg = unsigned(width);
  const unsigned lane = me & 31u;
  const unsigned seg_base = lane / seg * seg;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  sync_warp();  // the previous exchange has been read by every lane
  *exchange_slot(me) = bits;
  sync_warp();
  T r = v;
  if (src_lane >= 0) {
    const unsigned src = warp_base + seg_base + unsigned(src_lane) % seg;
    const uint64_t got = *exchange_slot(src);
    std::memcpy(&r, &got, sizeof(T));
  }
  return r;
}

}  // namespace tessera::emu

inline void __syncthreads() {
  tessera::emu::sync_block();
}
inline void __syncwarp(unsigned = 0xffffffffu) {
  tessera::emu::sync_warp_fenced();
}
inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
[[noreturn]] inline void __trap() {
  tessera::emu::trap("__trap()");
}

template <class T>
T __shfl_sync(unsigned, T v, int src, int width = warpSize) {
  return tessera::emu::shuffle_from(v, src, width);
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = warpSize) {
  const int lane = int(threadIdx.x % unsigned(width));  // lane in a 1-D block, as we launch
  return tessera::emu::shuffle_from(v, lane ^ mask, width);
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = warpSize) {
  const int lane = int(tessera::emu::linear_thread() % unsigned(width));
  const int src = lane + int(delta);
  return tessera::emu::shuffle_from(v, src < width ? src : -1, width);
}
template <class T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = warpSize) {
  const int lane = int(tessera::emu::linear_thread() % unsigned(width));
  const int src = lane - int(delta);
  return tessera::emu::shuffle_from(v, src, width);
}
unsigned __ballot_sync(unsigned mask, int pred);
inline int __any_sync(unsigned mask, int pred) {
  return __ballot_sync(mask, pred) != 0;
}
inline int __all_sync(unsigned mask, int pred) {
  return __ballot_sync(mask, pred) == mask;
}

// Atomics: blocks run one at a time per stream, but streams run concurrently, so these are real
// atomic operations on the (host) memory.
template <class T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
inline unsigned atomicOr(unsigned* p, unsigned v) {
  return std::atomic_ref<unsigned>(*p).fetch_or(v);
}
inline int atomicOr(int* p, int v) {
  return std::atomic_ref<int>(*p).fetch_or(v);
}
inline int atomicMax(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int cur = a.load();
  while (cur < v && !a.compare_exchange_weak(cur, v)) {
  }
  return cur;
}
template <class T>
T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
  return expected;
}

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline unsigned __float_as_uint(float f) {
  unsigned i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float __uint_as_float(unsigned i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float rsqrtf(float x) {
  return 1.f / std::sqrt(x);
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
