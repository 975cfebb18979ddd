#include "kernels/cuda/embedding.h"

#include <cstring>
#include <vector>

#include "core/error.h"
#include "cuda/allocator.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

// One block per id row, threads across the columns: coalesced reads and writes.
template <class T>
__global__ void embedding_forward_kernel(const T* w, const int32_t* ids, T* y, int64_t C) {
  const int64_t i = blockIdx.x;
  T* dst = y + i * C;
  if (ids[i] == kernels::kSkippedId) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = from_f32<T>(0.f);
    return;
  }
  const T* src = w + int64_t(ids[i]) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

// Columns per block of the backward: a GPT-2 row (768) is 6 blocks, so that one very frequent
// id (its positions are summed one after another) still spreads over several SMs.
constexpr int kBackwardCols = 128;

// blockIdx.x: group k of `packed` (kernels::IdGroups' layout); blockIdx.y: a tile of kBackwardCols
// columns. Each thread owns one column of one row and adds the group's gradient rows into it in
// position order: every dw element is written by exactly one thread, the sum runs in the CPU
// kernel's order (old value, then positions ascending), and no two runs can differ.
__global__ void embedding_backward_kernel(const float* gy, const int32_t* packed, int64_t count,
                                          float* dw, int64_t C, bool accumulate) {
  const int64_t k = blockIdx.x;
  const int64_t c = int64_t(blockIdx.y) * kBackwardCols + threadIdx.x;
  if (c >= C) return;
  const int32_t* offsets = packed;
  const int32_t* rows = packed + count + 1;
  const int32_t* positions = rows + count;
  float* d = dw + int64_t(rows[k]) * C + c;
  float acc = accumulate ? *d : 0.f;
  const int32_t end = offsets[k + 1];
  for (int32_t j = offsets[k]; j < end; ++j) acc += gy[int64_t(positions[j]) * C + c];
  *d = acc;
}

}  // namespace

template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C, cudaStream_t s) {
  if (n <= 0) return;
  launch<embedding_forward_kernel<T>>(unsigned(n), kThreads, 0, s, w, ids, y, C);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(const float* gy, const kernels::IdGroups& groups, float* dw, int64_t V,
                        int64_t C, bool accumulate, cudaStream_t s) {
  TS_CHECK(groups.packed.size() == size_t(2 * groups.count + 1 + groups.n),
           "cuda embedding_backward: id groups hold {} ints, expected {} (2 x {} groups + 1 + {} "
           "positions)",
           groups.packed.size(), 2 * groups.count + 1 + groups.n, groups.count, groups.n);
  TS_CHECK(C <= int64_t(kBackwardCols) * 65535,
           "cuda embedding_backward: {} columns exceed the grid's limit of {}", C,
           int64_t(kBackwardCols) * 65535);
  // Rows that no id names get no block: zero them all first (the groups' rows are overwritten).
  if (!accumulate) CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(V * C) * sizeof(float), s));
  if (groups.count == 0 || C == 0) return;
  DeviceCachingAllocator& alloc = device_allocator();
  const size_t bytes = groups.packed.size() * sizeof(int32_t);
  auto* packed = static_cast<int32_t*>(alloc.allocate_on(bytes, s));
  // Staged in pinned memory (the data loader's pattern): the copy is truly asynchronous, the
  // host never waits for the GPU here, and the staging block is reused only after the copy.
  {
    PinnedBuffer staging(bytes);
    std::memcpy(staging.data(), groups.packed.data(), bytes);
    CUDA_CHECK(cudaMemcpyAsync(packed, staging.data(), bytes, cudaMemcpyHostToDevice, s));
    pinned_allocator().record_use(staging.data(), s);
  }
  const dim3 grid(unsigned(groups.count), unsigned((C + kBackwardCols - 1) / kBackwardCols));
  launch<embedding_backward_kernel>(grid, kBackwardCols, 0, s, gy, packed, groups.count, dw, C,
                                    accumulate);
  CUDA_CHECK_LAUNCH();
  alloc.release(packed, bytes);  // reused on `s` only after the kernel (stream order)
}

void embedding_backward(const float* gy, const int32_t* ids, float* dw, int64_t n, int64_t V,
                        int64_t C, bool accumulate, cudaStream_t s) {
  std::vector<int32_t> host(size_t(n > 0 ? n : 0));
  if (n > 0) {
    CUDA_CHECK(
        cudaMemcpyAsync(host.data(), ids, size_t(n) * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  embedding_backward(gy, kernels::group_ids(host.data(), n, V), dw, V, C, accumulate, s);
}

template void embedding_forward<float>(const float*, const int32_t*, float*, int64_t, int64_t,
                                       cudaStream_t);
template void embedding_forward<bf16>(const bf16*, const int32_t*, bf16*, int64_t, int64_t,
                                      cudaStream_t);
template void embedding_forward<f16>(const f16*, const int32_t*, f16*, int64_t, int64_t,
                                     cudaStream_t);

}  // namespace tessera::cuda
