// The CPU's strided copy (kernels/cpu/strided_copy.h) against the element-by-element definition,
// over random views of every element size: permuted dims, slices, size-1 and empty dims, runs
// long and short, large enough to take the threaded paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/strided_copy.h"

using namespace tessera;

namespace {

// dst[k] = src[offset of the row-major multi-index of k]: the definition, one element at a time.
std::vector<uint8_t> reference_copy(const uint8_t* src, const StridedLayout& v, size_t es) {
  int64_t n = 1;
  for (int d = 0; d < v.ndim; ++d) n *= v.sizes[d];
  std::vector<uint8_t> out(size_t(n) * es);
  int64_t idx[kMaxDims] = {};
  for (int64_t k = 0; k < n; ++k) {
    int64_t off = 0;
    for (int d = 0; d < v.ndim; ++d) off += idx[d] * v.strides[d];
    std::memcpy(out.data() + k * es, src + off * int64_t(es), es);
    for (int d = v.ndim - 1; d >= 0; --d) {
      if (++idx[d] < v.sizes[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

// A view of a random contiguous buffer: dims permuted, each optionally cut to a sub-range.
struct RandomView {
  std::vector<uint8_t> storage;
  int64_t offset = 0;  // elements
  StridedLayout layout;
};

RandomView random_view(std::mt19937& rng, size_t es, int64_t max_extent) {
  std::uniform_int_distribution<int> ndim_of(1, kMaxDims);
  const int nd = ndim_of(rng);
  std::vector<int64_t> full(nd);
  for (auto& f : full) f = std::uniform_int_distribution<int64_t>(1, max_extent)(rng);
  if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) full[rng() % nd] = 1;
  std::vector<int64_t> strides(nd);
  int64_t n = 1;
  for (int d = nd - 1; d >= 0; --d) strides[d] = n, n *= full[d];
  RandomView v;
  v.storage.resize(size_t(n) * es);
  for (auto& b : v.storage) b = uint8_t(rng());
  std::vector<int> order(nd);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  v.layout.ndim = nd;
  for (int d = 0; d < nd; ++d) {
    const int src = order[d];
    int64_t lo = 0, hi = full[src];
    if (rng() % 2) {  // cut this dim to [lo, hi)
      lo = std::uniform_int_distribution<int64_t>(0, full[src] - 1)(rng);
      hi = std::uniform_int_distribution<int64_t>(lo + 1, full[src])(rng);
    }
    v.offset += lo * strides[src];
    v.layout.sizes[d] = hi - lo;
    v.layout.strides[d] = strides[src];
  }
  return v;
}

}  // namespace

TEST(StridedCopy, MatchesTheDefinitionOnRandomViews) {
  std::mt19937 rng(7);
  for (size_t es : {1, 2, 4, 8}) {
    for (int trial = 0; trial < 300; ++trial) {
      const RandomView v = random_view(rng, es, trial % 10 == 0 ? 40 : 9);
      const uint8_t* src = v.storage.data() + v.offset * int64_t(es);
      const std::vector<uint8_t> want = reference_copy(src, v.layout, es);
      std::vector<uint8_t> got(want.size() + es, 0xAB);  // one guard element past the end
      cpu::strided_copy(src, got.data(), v.layout, es);
      ASSERT_TRUE(std::equal(want.begin(), want.end(), got.begin()))
          << "element size " << es << ", trial " << trial;
      for (size_t b = want.size(); b < got.size(); ++b)
        ASSERT_EQ(got[b], 0xAB) << "wrote past the end";
    }
  }
}

// Large enough for the threaded paths (runs and tiles both): a [512, 1024] f32 buffer read
// transposed (innermost stride 1024), and with its columns cut (runs of 100).
TEST(StridedCopy, LargeTransposeAndColumnCut) {
  const int64_t R = 512, C = 1024;
  std::vector<float> a(size_t(R * C));
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i);
  StridedLayout t{2, {C, R}, {1, C}};
  std::vector<float> out(a.size());
  cpu::strided_copy(a.data(), out.data(), t, 4);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < R; ++r) ASSERT_EQ(out[size_t(c * R + r)], a[size_t(r * C + c)]);
  StridedLayout cut{2, {R, 100}, {C, 1}};
  cpu::strided_copy(a.data() + 7, out.data(), cut, 4);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < 100; ++c) ASSERT_EQ(out[size_t(r * 100 + c)], a[size_t(r * C + 7 + c)]);
}

TEST(StridedCopy, SimplifiedLayoutMergesWhatIsContiguous) {
  // [2, 3, 4] contiguous with a size-1 dim between: one run of 24.
  StridedLayout l = cpu::simplified_layout(StridedLayout{4, {2, 1, 3, 4}, {12, 99, 4, 1}});
  EXPECT_EQ(l.ndim, 1);
  EXPECT_EQ(l.sizes[0], 24);
  EXPECT_EQ(l.strides[0], 1);
  // Rows of a column cut stay two dims: [5, 3] of a [5, 8].
  l = cpu::simplified_layout(StridedLayout{2, {5, 3}, {8, 1}});
  EXPECT_EQ(l.ndim, 2);
  // An empty dim anywhere: nothing to copy.
  l = cpu::simplified_layout(StridedLayout{3, {2, 0, 3}, {3, 3, 1}});
  EXPECT_EQ(l.sizes[0], 0);
}
