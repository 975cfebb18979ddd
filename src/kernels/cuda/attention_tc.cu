// Tensor-core causal attention (attention_tc.h): argument checks, launch geometry, the
// shared-memory opt-in and the launches. The kernels are in attention_tc_kernels.cuh.
#include "kernels/cuda/attention_tc.h"

#include "core/error.h"
#include "cuda/allocator.h"
#include "kernels/cuda/attention_tc_kernels.cuh"

namespace tessera::cuda {
namespace {

Geo geometry(const kernels::AttentionWindowDims& d) {
  Geo g;
  g.Tq = d.q_seq, g.Tk = d.kv_seq, g.offset = d.q_offset, g.C = d.channels, g.H = d.heads;
  g.q_row = d.q_row, g.kv_row = d.kv_row;
  g.k_col = d.kv_col, g.v_col = d.kv_col + kernels::attention_kv_channels(d);
  g.group = kernels::attention_group(d);
  const float hs = float(kernels::attention_head_size(d));
  g.scale = 1.f / sqrtf(hs);
  g.scale_log2 = kLog2e / sqrtf(hs);
  return g;
}

// The names the argument errors give the pointers: a fused qkv's, or a window's q and kv.
struct OperandNames {
  const char *q, *kv, *dq, *dkv;
};
constexpr OperandNames kFusedNames{"qkv", "qkv", "dqkv", "dqkv"};
constexpr OperandNames kWindowNames{"q", "kv", "dq", "dkv"};

// The kernels move 16 bytes per load and 8 per store: these arrays must be 16-byte aligned
// (the allocators align far more; a view into the middle of a row may not be).
void check_aligned(const void* p, const char* what, const kernels::AttentionWindowDims& d) {
  TS_CHECK(p != nullptr, "cuda attention_tc (B {}, T {}, C {}, H {}): {} is null", d.batch, d.q_seq,
           d.channels, d.heads, what);
  TS_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0,
           "cuda attention_tc (B {}, T {}, C {}, H {}): {} at {} is not 16-byte aligned", d.batch,
           d.q_seq, d.channels, d.heads, what, p);
}

// The device can run the kernels (sm_80+) and give `smem` bytes of shared memory to a block;
// then opts `kernel` in to that much dynamic shared memory (the default limit is 48 KiB).
template <class Kernel>
void prepare(Kernel* kernel, size_t smem, const char* name) {
  int dev = 0, major = 0, minor = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  TS_CHECK(major >= 8,
           "cuda attention_tc: device {} has compute capability {}.{}; the bf16/f16 tensor-core "
           "kernels need 8.0 or later",
           dev, major, minor);
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  TS_CHECK(size_t(optin) >= smem,
           "cuda attention_tc: {} needs {} bytes of shared memory per block; device {} allows {}",
           name, smem, dev, optin);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

template <class T, int HS>
void forward_hs(const AttentionTcLaunch& L, const Geo& g, const T* q, const T* kv, float* out,
                float* lse, cudaStream_t s) {
  prepare(tc_forward_kernel<T, HS>, L.smem_forward, "the forward kernel");
  launch<tc_forward_kernel<T, HS>>(dim3(L.tiles, L.pairs), L.threads, L.smem_forward, s, g, q, kv,
                                   out, lse);
  CUDA_CHECK_LAUNCH();
}

// delta (a pooled buffer released in stream order), then the dq and dk/dv kernels, which
// both read it and write disjoint columns (dq, dkv) of their outputs.
template <class T, int HS>
void backward_hs(const AttentionTcLaunch& L, const kernels::AttentionWindowDims& d, const Geo& g,
                 const T* q, const T* kv, const float* out, const float* lse, const float* dout,
                 float* dq, float* dkv, cudaStream_t s) {
  prepare(tc_dq_kernel<T, HS>, L.smem_dq, "the dq kernel");
  prepare(tc_dkv_kernel<T, HS>, L.smem_dkv, "the dk/dv kernel");
  const int64_t rows = d.batch * d.heads * d.q_seq;
  const size_t bytes = size_t(rows) * sizeof(float);
  DeviceCachingAllocator& alloc = device_allocator();
  struct Pooled {  // released even when a launch throws
    DeviceCachingAllocator& alloc;
    float* p;
    size_t bytes;
    ~Pooled() { alloc.release(p, bytes); }
  } delta{alloc, static_cast<float*>(alloc.allocate_on(bytes, s)), bytes};
  constexpr int kRowsPerBlock = kThreads / kWarp;
  launch<tc_delta_kernel<T>>(unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0, s,
                             g, HS, out, dout, delta.p, rows);
  CUDA_CHECK_LAUNCH();
  launch<tc_dq_kernel<T, HS>>(dim3(L.tiles, L.pairs), L.threads, L.smem_dq, s, g, q, kv, lse,
                              delta.p, dout, dq);
  CUDA_CHECK_LAUNCH();
  launch<tc_dkv_kernel<T, HS>>(dim3(L.kv_tiles, L.kv_pairs), L.threads, L.smem_dkv, s, g, q, kv,
                               lse, delta.p, dout, dkv);
  CUDA_CHECK_LAUNCH();
}

unsigned tile_count(int64_t rows) {
  const int64_t tiles = (rows + kTile - 1) / kTile;
  TS_CHECK(tiles <= int64_t(0x7fffffff), "cuda attention_tc: seq {} is too long", rows);
  return unsigned(tiles);
}

template <class T>
void forward(const kernels::AttentionWindowDims& d, const T* q, const T* kv, float* out, float* lse,
             const OperandNames& names, cudaStream_t s) {
  const AttentionTcLaunch L = attention_tc_window_launch(d);
  if (d.batch == 0 || d.q_seq == 0) return;
  check_aligned(q, names.q, d);
  check_aligned(kv, names.kv, d);
  check_aligned(out, "out", d);
  TS_CHECK(lse != nullptr, "cuda attention_tc: lse is null");
  const Geo g = geometry(d);
  if (L.head_size == 64)
    forward_hs<T, 64>(L, g, q, kv, out, lse, s);
  else
    forward_hs<T, 128>(L, g, q, kv, out, lse, s);
}

template <class T>
void backward(const kernels::AttentionWindowDims& d, const T* q, const T* kv, const float* out,
              const float* lse, const float* dout, float* dq, float* dkv, const OperandNames& names,
              cudaStream_t s) {
  const AttentionTcLaunch L = attention_tc_window_launch(d);
  if (d.batch == 0 || d.q_seq == 0) return;
  check_aligned(q, names.q, d);
  check_aligned(kv, names.kv, d);
  check_aligned(dq, names.dq, d);
  check_aligned(dkv, names.dkv, d);
  TS_CHECK(out != nullptr && lse != nullptr && dout != nullptr,
           "cuda attention_tc: out, lse or dout is null");
  const Geo g = geometry(d);
  if (L.head_size == 64)
    backward_hs<T, 64>(L, d, g, q, kv, out, lse, dout, dq, dkv, s);
  else
    backward_hs<T, 128>(L, d, g, q, kv, out, lse, dout, dq, dkv, s);
}

}  // namespace

AttentionTcLaunch attention_tc_window_launch(const kernels::AttentionWindowDims& d) {
  TS_CHECK(kernels::attention_window_valid(d),
           "cuda attention_tc: batch {}, seq {} at offset {} over {} keys: expected sizes >= 0 "
           "and keys >= offset + seq",
           d.batch, d.q_seq, d.q_offset, d.kv_seq);
  TS_CHECK(d.heads > 0 && d.channels > 0 && d.channels % d.heads == 0,
           "cuda attention_tc: channels {} must be a positive multiple of heads {}", d.channels,
           d.heads);
  TS_CHECK(d.kv_heads > 0 && d.heads % d.kv_heads == 0,
           "cuda attention_tc: kv_heads {} must be positive and divide heads {}", d.kv_heads,
           d.heads);
  const int64_t hs = d.channels / d.heads;
  TS_CHECK(attention_tc_supports(hs),
           "cuda attention_tc: head size {} (C {} / H {}): the tensor-core kernels take 64 or 128",
           hs, d.channels, d.heads);
  TS_CHECK(d.batch * d.heads <= 65535,
           "cuda attention_tc: batch * heads = {} exceeds 65535 (grid.y)", d.batch * d.heads);
  AttentionTcLaunch L;
  L.head_size = hs;
  L.tiles = tile_count(d.q_seq);
  L.kv_tiles = tile_count(d.kv_seq);
  L.pairs = unsigned(d.batch * d.heads);
  L.kv_pairs = unsigned(d.batch * d.kv_heads);
  L.threads = kBlock;
  const int h = int(hs);
  L.smem_forward = forward_smem(h);
  L.smem_dq = dq_smem(h);
  L.smem_dkv = dkv_smem(h);
  return L;
}

AttentionTcLaunch attention_tc_launch(const kernels::AttentionDims& d) {
  return attention_tc_window_launch(kernels::attention_window_of(d));
}

template <class T>
void attention_tc_window_forward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                                 float* out, float* lse, cudaStream_t s) {
  forward(d, q, kv, out, lse, kWindowNames, s);
}

template <class T>
void attention_tc_window_backward(const kernels::AttentionWindowDims& d, const T* q, const T* kv,
                                  const float* out, const float* lse, const float* dout, float* dq,
                                  float* dkv, cudaStream_t s) {
  backward(d, q, kv, out, lse, dout, dq, dkv, kWindowNames, s);
}

template <class T>
void attention_tc_forward(const kernels::AttentionDims& d, const T* qkv, float* out, float* lse,
                          cudaStream_t s) {
  forward(kernels::attention_window_of(d), qkv, qkv, out, lse, kFusedNames, s);
}

template <class T>
void attention_tc_backward(const kernels::AttentionDims& d, const T* qkv, const float* out,
                           const float* lse, const float* dout, float* dqkv, cudaStream_t s) {
  backward(kernels::attention_window_of(d), qkv, qkv, out, lse, dout, dqkv, dqkv, kFusedNames, s);
}

#define TS_ATTENTION_TC_INSTANTIATE(T)                                                           \
  template void attention_tc_window_forward<T>(const kernels::AttentionWindowDims&, const T*,    \
                                               const T*, float*, float*, cudaStream_t);          \
  template void attention_tc_window_backward<T>(const kernels::AttentionWindowDims&, const T*,   \
                                                const T*, const float*, const float*,            \
                                                const float*, float*, float*, cudaStream_t);     \
  template void attention_tc_forward<T>(const kernels::AttentionDims&, const T*, float*, float*, \
                                        cudaStream_t);                                           \
  template void attention_tc_backward<T>(const kernels::AttentionDims&, const T*, const float*,  \
                                         const float*, const float*, float*, cudaStream_t);
TS_ATTENTION_TC_INSTANTIATE(bf16)
TS_ATTENTION_TC_INSTANTIATE(f16)
#undef TS_ATTENTION_TC_INSTANTIATE

}  // namespace tessera::cuda
