// The device buffers the CUDA kernel helpers (src/kernels/cuda) take from the caching allocator
// inside a call, sized as they size them, so the meta device playing a GPU sees them too
// (meta::scratch, meta::persistent). Each function names the helper whose allocation it
// mirrors; tests/cuda/test_cuda_meta_device.cpp checks that the meta device's allocator peak
// equals the emulated CUDA device's for every op, which fails if one drifts from its helper.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace tessera::ops::cuda_scratch {

// cuBLASLt's workspace (kernels/cuda/matmul.cu, kWorkspaceBytes): allocated by the first GEMM on
// a (device, stream) and kept.
constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;
constexpr const char* kGemmWorkspace = "cublaslt_workspace";

// kernels/cuda/common.cuh's grid_for with its 256 threads per block.
inline int64_t grid_for(int64_t n) {
  const int64_t want = (n + 255) / 256, cap = 132 * 16;
  return want < 1 ? 1 : std::min(want, cap);
}

// cuda::sum (elementwise.cu's reduce): per-block partial sums and the result, f64.
inline size_t sum(int64_t n) {
  return n <= 0 ? 0 : size_t(grid_for(n) + 1) * sizeof(double);
}

// cuda::sum_rows_acc (elementwise.cu): f32 partial column sums per chunk of rows, when the rows
// take more than one chunk.
inline size_t sum_rows(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return 0;
  const int64_t chunk = std::max<int64_t>(256, (rows + 1023) / 1024);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  return chunks == 1 ? 0 : size_t(chunks * cols) * sizeof(float);
}

// The norms' weight / bias gradients (norm.cu's param_grads): two f32 partials per row chunk.
inline size_t norm_param_grads(int64_t rows, int64_t C, bool any) {
  if (!any || rows <= 0) return 0;
  const int64_t chunk = rows < 128 * 16 ? 16 : (rows + 127) / 128;
  const int64_t chunks = (rows + chunk - 1) / chunk;
  return size_t(2 * chunks * C) * sizeof(float);
}

// cuda::cross_entropy_forward (softmax.cu) and sharded_cross_entropy_combine
// (sharded_cross_entropy.cu): each row's loss, f32, before the masked mean.
inline size_t row_loss(int64_t rows) {
  return size_t(rows > 0 ? rows : 1) * sizeof(float);
}

// The attention backwards (attention.cu, attention_tc.cu): delta, f32 per (batch, head, query).
inline size_t attention_delta(int64_t rows) {
  return size_t(rows) * sizeof(float);
}

// cuda::embedding_backward (embedding.cu): the id groups (kernels::IdGroups::packed, 2 x groups
// + 1 + n ints) staged on the device. The meta device has no ids to group: n groups (every id
// distinct), the most there can be.
inline size_t embedding_groups(int64_t n, int64_t C) {
  return n <= 0 || C <= 0 ? 0 : size_t(3 * n + 1) * sizeof(int32_t);
}

}  // namespace tessera::ops::cuda_scratch
