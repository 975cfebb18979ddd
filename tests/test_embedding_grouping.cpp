// kernels::group_ids, the host half of the CUDA embedding backward: positions grouped by id (a
// stable counting sort) so that one GPU block per id sums that id's gradient rows in position
// order. Checked here on the CPU: the grouping itself, its errors, and that summing group by
// group in that order gives cpu::embedding_backward's result bit for bit (the reason the GPU
// kernel, which does exactly that, matches the CPU and repeats itself exactly).
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "gradcheck.h"
#include "kernels/common/id_groups.h"
#include "kernels/cpu/embedding.h"

using namespace tessera;

namespace {

std::vector<int32_t> random_ids(Generator& g, int64_t n, int64_t V) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = int32_t(g.next_u64() % uint64_t(V));
  return ids;
}

// Every structural promise of IdGroups, against the ids it came from.
void expect_valid_grouping(const kernels::IdGroups& g, const std::vector<int32_t>& ids, int64_t V) {
  const int64_t n = int64_t(ids.size());
  ASSERT_EQ(g.n, n);
  ASSERT_EQ(g.packed.size(), size_t(2 * g.count + 1 + n));
  std::vector<int64_t> occurrences(size_t(V), 0);
  for (int32_t id : ids) ++occurrences[size_t(id)];
  int64_t distinct = 0;
  for (int64_t c : occurrences) distinct += c > 0;
  EXPECT_EQ(g.count, distinct);
  EXPECT_EQ(g.offsets()[0], 0);
  EXPECT_EQ(g.offsets()[g.count], n);
  std::vector<int> seen(size_t(n), 0);
  for (int64_t k = 0; k < g.count; ++k) {
    const int32_t row = g.rows()[k], b = g.offsets()[k], e = g.offsets()[k + 1];
    if (k > 0) {
      EXPECT_LT(g.rows()[k - 1], row) << "rows not strictly ascending at group " << k;
    }
    ASSERT_TRUE(row >= 0 && row < V) << "group " << k;
    EXPECT_EQ(e - b, occurrences[size_t(row)]) << "row " << row;
    for (int32_t j = b; j < e; ++j) {
      const int32_t p = g.positions()[j];
      ASSERT_TRUE(p >= 0 && p < n) << "group " << k << " slot " << j;
      EXPECT_EQ(ids[size_t(p)], row) << "position " << p << " filed under row " << row;
      if (j > b) {
        EXPECT_LT(g.positions()[j - 1], p) << "positions of row " << row << " unsorted";
      }
      ++seen[size_t(p)];
    }
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[size_t(i)], 1) << "position " << i;
}

TEST(EmbeddingGrouping, SmallExampleByHand) {
  const std::vector<int32_t> ids = {3, 1, 3, 0, 1, 3};
  const kernels::IdGroups g = kernels::group_ids(ids.data(), 6, 5);
  ASSERT_EQ(g.count, 3);
  EXPECT_EQ(std::vector<int32_t>(g.offsets(), g.offsets() + 4), (std::vector<int32_t>{0, 1, 3, 6}));
  EXPECT_EQ(std::vector<int32_t>(g.rows(), g.rows() + 3), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(std::vector<int32_t>(g.positions(), g.positions() + 6),
            (std::vector<int32_t>{3, 1, 4, 0, 2, 5}));
  expect_valid_grouping(g, ids, 5);
}

TEST(EmbeddingGrouping, RandomIdsFewAndManyRowsAndEmpty) {
  Generator gen(42);
  // Heavily repeated (7 rows for 4096 positions), sparse (most rows unused), one row only.
  for (const auto& [n, V] : {std::pair<int64_t, int64_t>{4096, 7}, {300, 50257}, {65, 1}}) {
    SCOPED_TRACE("n " + std::to_string(n) + " V " + std::to_string(V));
    const std::vector<int32_t> ids = random_ids(gen, n, V);
    expect_valid_grouping(kernels::group_ids(ids.data(), n, V), ids, V);
  }
  const kernels::IdGroups none = kernels::group_ids(nullptr, 0, 10);
  EXPECT_EQ(none.count, 0);
  EXPECT_EQ(none.packed, std::vector<int32_t>{0});  // offsets {0}, no rows, no positions
}

TEST(EmbeddingGrouping, OutOfRangeIdsAreErrorsNamingIdAndPosition) {
  const std::vector<int32_t> high = {0, 2, 5, 1}, negative = {0, -2};
  tessera::testing::expect_error([&] { kernels::group_ids(high.data(), 4, 5); },
                                 {"embedding", "id 5", "position 2", "< 5"});
  tessera::testing::expect_error([&] { kernels::group_ids(negative.data(), 2, 5); },
                                 {"embedding", "id -2", "position 1"});
}

// kSkippedId (-1: an id another vocabulary shard holds) joins no group; the other positions
// keep their places.
TEST(EmbeddingGrouping, SkippedIdsJoinNoGroup) {
  const std::vector<int32_t> ids = {3, kernels::kSkippedId, 1, 3, kernels::kSkippedId};
  const kernels::IdGroups g = kernels::group_ids(ids.data(), 5, 4);
  EXPECT_EQ(g.n, 3);
  ASSERT_EQ(g.count, 2);
  EXPECT_EQ(std::vector<int32_t>(g.rows(), g.rows() + 2), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(std::vector<int32_t>(g.positions(), g.positions() + 3),
            (std::vector<int32_t>{2, 0, 3}));
}

// What the CUDA kernel computes, written out on the host: per group, per column, the old value
// (or 0) plus the group's gradient rows in position order.
void grouped_backward(const float* gy, const kernels::IdGroups& g, float* dw, int64_t V, int64_t C,
                      bool accumulate) {
  if (!accumulate) std::memset(dw, 0, size_t(V * C) * sizeof(float));
  for (int64_t k = 0; k < g.count; ++k)
    for (int64_t c = 0; c < C; ++c) {
      float* d = dw + int64_t(g.rows()[k]) * C + c;
      float acc = accumulate ? *d : 0.f;
      for (int32_t j = g.offsets()[k]; j < g.offsets()[k + 1]; ++j)
        acc += gy[int64_t(g.positions()[j]) * C + c];
      *d = acc;
    }
}

std::vector<uint32_t> bits(const std::vector<float>& v) {
  std::vector<uint32_t> b(v.size());
  std::memcpy(b.data(), v.data(), v.size() * sizeof(float));
  return b;
}

TEST(EmbeddingGrouping, GroupedSumsAreTheCpuKernelsBitForBit) {
  Generator gen(7);
  const int prev_threads = omp_get_max_threads();
  omp_set_num_threads(2);  // the CPU kernel's parallel path: threads own column ranges
  // n * C above the kernel's parallel grain; C not a multiple of the 16-column ranges.
  for (const auto& [n, V, C] :
       {std::tuple<int64_t, int64_t, int64_t>{4096, 7, 100}, {2000, 1000, 37}, {64, 3, 1}}) {
    SCOPED_TRACE("n " + std::to_string(n) + " V " + std::to_string(V) + " C " + std::to_string(C));
    const std::vector<int32_t> ids = random_ids(gen, n, V);
    // Mixed magnitudes, so that the order of the additions shows in the rounding.
    std::vector<float> gy = Tensor::randn(Shape{n * C}, gen).to_vector();
    for (size_t i = 0; i < gy.size(); i += 3) gy[i] *= 1e4f;
    const std::vector<float> old = Tensor::randn(Shape{V * C}, gen).to_vector();
    const kernels::IdGroups g = kernels::group_ids(ids.data(), n, V);
    for (bool accumulate : {false, true}) {
      std::vector<float> want = old, got = old;
      cpu::embedding_backward(gy.data(), ids.data(), want.data(), n, V, C, accumulate);
      grouped_backward(gy.data(), g, got.data(), V, C, accumulate);
      EXPECT_TRUE(bits(got) == bits(want)) << "accumulate " << accumulate;
    }
    // The check has teeth: another order of the same additions rounds differently.
    if (n / V >= 64) {
      std::vector<int32_t> rev(ids.rbegin(), ids.rend());
      std::vector<float> gy_rev(gy.size());
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(gy_rev.data() + i * C, gy.data() + (n - 1 - i) * C, size_t(C) * 4);
      std::vector<float> reversed(old.size()), want(old.size());
      cpu::embedding_backward(gy_rev.data(), rev.data(), reversed.data(), n, V, C);
      cpu::embedding_backward(gy.data(), ids.data(), want.data(), n, V, C);
      EXPECT_FALSE(bits(reversed) == bits(want)) << "summation order left no trace";
    }
  }
  omp_set_num_threads(prev_threads);
}

}  // namespace
