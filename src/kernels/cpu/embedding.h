// Embedding lookup: rows of a [V, C] table gathered by i32 ids, and the scatter-add backward.
// Ids must already be checked to lie in [0, V).
#pragma once
#include <cstdint>
#include <vector>

#include "core/half.h"

namespace tessera::cpu {

// y[i, :] = w[ids[i], :] for i < n (storage type T: float, bf16 or f16).
template <class T>
void embedding_forward(const T* w, const int32_t* ids, T* y, int64_t n, int64_t C);

// dw = 0 (unless accumulate), then dw[ids[i], :] += gy[i, :] for i < n (dw is [V, C] f32).
// Threads own column ranges, so repeated ids need no atomics and every sum runs over i in order
// (reproducible).
void embedding_backward(const float* gy, const int32_t* ids, float* dw, int64_t n, int64_t V,
                        int64_t C, bool accumulate = false);

// The positions of n ids grouped by id (a stable counting sort, O(n + V)): what a scatter-add
// without atomics needs to sum each row's gradients in position order, as embedding_backward
// does, on a device where one block owns one row. Group k is row rows()[k] and holds positions
// positions()[offsets()[k] .. offsets()[k + 1]), ascending; rows ascending, only rows that occur.
// Everything is int32 in one array (offsets, then rows, then positions), so that one copy moves
// it to a device (cuda::embedding_backward).
struct IdGroups {
  int64_t count = 0;            // distinct ids (groups)
  int64_t n = 0;                // positions
  std::vector<int32_t> packed;  // [offsets: count + 1][rows: count][positions: n]

  const int32_t* offsets() const { return packed.data(); }
  const int32_t* rows() const { return packed.data() + count + 1; }
  const int32_t* positions() const { return packed.data() + 2 * count + 1; }
};

// Throws if an id is outside [0, V) or n does not fit in int32.
IdGroups group_ids(const int32_t* ids, int64_t n, int64_t V);

}  // namespace tessera::cpu
