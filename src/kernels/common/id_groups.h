// The positions of n embedding ids grouped by id (a stable counting sort, O(n + V)): what a
// scatter-add without atomics needs to sum each row's gradients in position order, as
// cpu::embedding_backward does, on a device where one block owns one row. Host code: the CUDA
// embedding backward (cuda/embedding.h) groups the ids in host memory and copies the result.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "core/error.h"

namespace tessera::kernels {

// Group k is row rows()[k] and holds positions positions()[offsets()[k] .. offsets()[k + 1]),
// ascending; rows ascending, only rows that occur. Everything is int32 in one array (offsets,
// then rows, then positions), so that one copy moves it to a device (cuda::embedding_backward).
struct IdGroups {
  int64_t count = 0;            // distinct ids (groups)
  int64_t n = 0;                // positions
  std::vector<int32_t> packed;  // [offsets: count + 1][rows: count][positions: n]

  const int32_t* offsets() const { return packed.data(); }
  const int32_t* rows() const { return packed.data() + count + 1; }
  const int32_t* positions() const { return packed.data() + 2 * count + 1; }
};

// Ids equal to kSkippedId are left out (a vocabulary-parallel embedding's ids held by another
// rank): their positions join no group, and n counts only the others. Throws if any other id
// is outside [0, V) or n does not fit in int32.
inline constexpr int32_t kSkippedId = -1;
inline IdGroups group_ids(const int32_t* ids, int64_t n, int64_t V) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  TS_CHECK(n >= 0 && n <= kMax && V >= 0 && V <= kMax,
           "embedding: grouping {} ids over {} rows: expected both counts in [0, 2^31)", n, V);
  // count[v] = occurrences of v, then each row's first slot in the position order.
  std::vector<int32_t> count(size_t(V), 0);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] == kSkippedId) continue;
    TS_CHECK(ids[i] >= 0 && ids[i] < V,
             "embedding: id {} at position {} is out of range: expected 0 <= id < {} (V)", ids[i],
             i, V);
    ++count[size_t(ids[i])];
    ++kept;
  }
  IdGroups g;
  g.n = kept;
  for (int64_t v = 0; v < V; ++v) g.count += count[size_t(v)] > 0;
  g.packed.assign(size_t(2 * g.count + 1 + kept), 0);
  int32_t* offsets = g.packed.data();
  int32_t* rows = offsets + g.count + 1;
  int32_t* positions = rows + g.count;
  int64_t k = 0, at = 0;
  for (int64_t v = 0; v < V; ++v) {
    const int32_t c = count[size_t(v)];
    if (c == 0) continue;
    offsets[k] = int32_t(at);
    rows[k] = int32_t(v);
    count[size_t(v)] = int32_t(at);  // from here on: the next free slot of row v
    at += c, ++k;
  }
  offsets[g.count] = int32_t(kept);
  // Positions visited in increasing order, each appended to its row's slots: stable.
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] != kSkippedId) positions[count[size_t(ids[i])]++] = int32_t(i);
  return g;
}

}  // namespace tessera::kernels
