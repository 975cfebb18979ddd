// Embedding lookup and its scatter-add backward on device buffers, mirroring cpu/embedding.h.
// Ids must already lie in [0, V) or equal kernels::kSkippedId (a zero row, no gradient).
#pragma once
#include <cstdint>

#include "cuda/device.h"
#include "kernels/common/id_groups.h"

namespace tessera::cuda {

// y[i, :] = w[ids[i], :]
template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C,
                       cudaStream_t s = current_stream());

// dw = 0 (unless accumulate), then dw[ids[i], :] += gy[i, :] for the n positions that `groups`
// (kernels::group_ids, in host memory) sorts by id. No atomics: one block per distinct id (and
// column tile) adds that id's gradient rows in position order onto the row's old value (0 when
// not accumulating), the very f32 additions of cpu::embedding_backward in the same order, so the
// result is the CPU's bit for bit and the same on every run. The groups are copied to the
// device here (one asynchronous copy through pinned memory, on `s`); they may be freed on
// return.
void embedding_backward(const float* gy, const kernels::IdGroups& groups, float* dw, int64_t V,
                        int64_t C, bool accumulate = false, cudaStream_t s = current_stream());

// The CPU kernel's arguments, ids on the device: copies them to the host (waiting for `s`),
// groups them, then as above.
void embedding_backward(const float* gy, const int32_t* ids, float* dw, int64_t n, int64_t V,
                        int64_t C, bool accumulate = false, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
