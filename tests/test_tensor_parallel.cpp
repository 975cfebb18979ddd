// Tensor parallelism's building blocks on one process (the multi-rank training runs are in
// tests/mpi/test_mpi_mesh.cpp): the even split, cutting parameters into blocks, the
// vocabulary-shard embedding and the vocabulary-parallel cross-entropy, each against its
// unsharded counterpart and float64 finite differences. A rank's partners are simulated: the
// statistics exchange returns the other shards' statistics computed from their fixed logits.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "gradcheck.h"
#include "kernels/cpu/sharded_cross_entropy.h"
#include "nn/tensor_parallel.h"
#include "ops/ops.h"

using namespace tessera;
using tessera::testing::check_gradients;
using tessera::testing::relative_error;

namespace {

TEST(TensorParallel, EvenPartsCoverTheRangeWithSizesDifferingByAtMostOne) {
  const nn::IndexRange p0 = nn::even_part(50257, 0, 4), p3 = nn::even_part(50257, 3, 4);
  EXPECT_EQ(p0, (nn::IndexRange{0, 12565}));
  EXPECT_EQ(p3, (nn::IndexRange{37693, 50257}));
  for (int parts : {1, 2, 3, 7}) {
    int64_t next = 0;
    for (int k = 0; k < parts; ++k) {
      const nn::IndexRange p = nn::even_part(10, k, parts);
      EXPECT_EQ(p.begin, next);
      EXPECT_LE(p.size(), 10 / parts + 1);
      EXPECT_GE(p.size(), 10 / parts);
      next = p.end;
    }
    EXPECT_EQ(next, 10);
  }
}

TEST(TensorParallel, TakeBlocksCutsRowsAndColumnsInOrder) {
  const Tensor w = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, Shape{4, 3});
  EXPECT_EQ(nn::take_blocks(w, 0, {{3, 4}, {0, 1}}).to_vector(),
            (std::vector<float>{9, 10, 11, 0, 1, 2}));
  EXPECT_EQ(nn::take_blocks(w, 1, {{1, 3}}).to_vector(),
            (std::vector<float>{1, 2, 4, 5, 7, 8, 10, 11}));
  tessera::testing::expect_error(
      [&] {
        nn::take_blocks(w, 1, {{2, 4}});
      },
      {"take_blocks", "[2, 4)", "dim 1"});
}

TEST(TensorParallel, VocabularyShardEmbeddingsSumToTheWholeLookup) {
  Generator g(3);
  const Tensor table = Tensor::randn(Shape{11, 5}, g);
  const Tensor ids = Tensor::from_ints({0, 10, 4, 4, 7, 2}, Shape{2, 3});
  const Tensor whole = ops::embedding(table, ids);
  Tensor sum = Tensor::zeros(whole.shape());
  for (int k = 0; k < 3; ++k) {
    const nn::IndexRange p = nn::even_part(11, k, 3);
    Tensor shard = nn::take_blocks(table, 0, {p}).set_requires_grad(true);
    const Tensor part = ops::embedding(shard, ids, p.begin);
    sum = ops::add(sum.detach(), part.detach());
    // The gradient reaches only the rows this shard holds, summed over repeated ids.
    ops::sum(part).backward();
    const std::vector<float> grad = shard.grad().to_vector();
    for (int64_t row = 0; row < p.size(); ++row) {
      int occurrences = 0;
      for (int32_t id : {0, 10, 4, 4, 7, 2}) occurrences += id == p.begin + row;
      for (int64_t c = 0; c < 5; ++c)
        EXPECT_EQ(grad[size_t(row * 5 + c)], float(occurrences)) << "shard " << k << " row " << row;
    }
  }
  EXPECT_EQ(sum.to_vector(), whole.to_vector());
}

// The exchange of a shard's statistics with simulated partners: rank `me`'s stats come from
// the op; the others' are computed here from their fixed logits.
ops::GatherShardStats simulated_partners(const std::vector<Tensor>& shards, const Tensor& targets,
                                         int me, int64_t V) {
  return [=](const Tensor& mine) {
    const int R = int(shards.size());
    const int64_t rows = targets.numel();
    Tensor all = Tensor::empty(Shape{int64_t(R), 2, rows});
    for (int k = 0; k < R; ++k) {
      float* dst = all.data<float>() + k * 2 * rows;
      if (k == me) {
        std::copy_n(mine.contiguous().data<float>(), 2 * rows, dst);
        continue;
      }
      const nn::IndexRange p = nn::even_part(V, k, R);
      cpu::sharded_cross_entropy_stats(shards[size_t(k)].contiguous().data<float>(),
                                       targets.data<int32_t>(), dst, rows, p.size(), p.begin, -1);
    }
    return all;
  };
}

TEST(TensorParallel, ShardedCrossEntropyEqualsTheWholeOneWithEachShardsGradientColumns) {
  Generator g(7);
  const int64_t V = 13, rows = 6;
  const Tensor logits = Tensor::randn(Shape{2, 3, V}, g, 0.f, 3.f);
  // Targets in every shard, and one ignored row.
  const Tensor targets = Tensor::from_ints({0, 12, 5, -1, 7, 4}, Shape{2, 3});
  Tensor whole_in = logits.clone().set_requires_grad(true);
  const Tensor whole = ops::cross_entropy(whole_in, targets);
  whole.backward();
  const Tensor whole_grad = whole_in.grad().view(Shape{rows, V});
  for (int R : {1, 2, 3}) {
    std::vector<Tensor> shards;
    for (int k = 0; k < R; ++k)
      shards.push_back(nn::take_blocks(logits.view(Shape{rows, V}), 1, {nn::even_part(V, k, R)})
                           .view(Shape{2, 3, nn::even_part(V, k, R).size()}));
    for (int k = 0; k < R; ++k) {
      const nn::IndexRange p = nn::even_part(V, k, R);
      Tensor in = shards[size_t(k)].clone().set_requires_grad(true);
      const Tensor loss = ops::sharded_cross_entropy(in, targets, p.begin, V, -1, DType::f32,
                                                     simulated_partners(shards, targets, k, V));
      EXPECT_NEAR(loss.item(), whole.item(), 2e-6 * std::abs(whole.item())) << R << " shards";
      loss.backward();
      const Tensor expect = nn::take_blocks(whole_grad, 1, {p});
      EXPECT_LT(relative_error(in.grad().view(expect.shape()), expect), 1e-6)
          << "shard " << k << " of " << R;
    }
  }
}

TEST(TensorParallel, ShardedCrossEntropyGradientMatchesFiniteDifferences) {
  Generator g(9);
  const int64_t V = 10;
  const Tensor targets = Tensor::from_ints({1, 9, 4, 6}, Shape{4});
  std::vector<Tensor> shards;
  for (int k = 0; k < 3; ++k)
    shards.push_back(Tensor::randn(Shape{4, nn::even_part(V, k, 3).size()}, g));
  const nn::IndexRange p = nn::even_part(V, 1, 3);
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return ops::sharded_cross_entropy(in[0], targets, p.begin, V, -1, DType::f32,
                                          simulated_partners(shards, targets, 1, V));
      },
      {tessera::testing::randn_param(shards[1].shape(), g)});
}

TEST(TensorParallel, ShardedCrossEntropyRefusesTargetsOutsideTheVocabularyAndBadShards) {
  const Tensor logits = Tensor::zeros(Shape{2, 4});
  auto gather = [](const Tensor& s) { return s.view(Shape{1, 2, s.dim(1)}); };
  tessera::testing::expect_error(
      [&] {
        ops::sharded_cross_entropy(logits, Tensor::from_ints({1, 8}, Shape{2}), 0, 8, -1,
                                   DType::f32, gather);
      },
      {"sharded_cross_entropy", "target 8", "0 <= target < 8"});
  tessera::testing::expect_error(
      [&] {
        ops::sharded_cross_entropy(logits, Tensor::from_ints({1, 2}, Shape{2}), 6, 8, -1,
                                   DType::f32, gather);
      },
      {"sharded_cross_entropy", "ids 6 .. 9", "vocabulary of 8"});
}

}  // namespace

namespace {

TEST(Slicing, RowsColumnsAndConcatAreCopiesWithGradients) {
  Generator g(5);
  const Tensor x = Tensor::randn(Shape{4, 3, 6}, g);
  const std::vector<float> v = x.to_vector();
  const Tensor r = ops::rows(x, 1, 3);
  EXPECT_EQ(r.shape(), (Shape{2, 3, 6}));
  EXPECT_EQ(r.to_vector(), std::vector<float>(v.begin() + 18, v.begin() + 54));
  const Tensor c = ops::columns(x, 2, 5);
  EXPECT_EQ(c.shape(), (Shape{4, 3, 3}));
  for (int64_t i = 0; i < 12; ++i)
    for (int64_t j = 0; j < 3; ++j)
      EXPECT_EQ(c.to_vector()[size_t(i * 3 + j)], v[size_t(i * 6 + 2 + j)]);
  const std::vector<float> j = ops::concat_rows(ops::rows(x, 3, 4), ops::rows(x, 0, 1)).to_vector();
  ASSERT_EQ(j.size(), 36u);
  EXPECT_EQ(std::vector<float>(j.begin(), j.begin() + 18),
            std::vector<float>(v.begin() + 54, v.end()));
  EXPECT_EQ(std::vector<float>(j.begin() + 18, j.end()),
            std::vector<float>(v.begin(), v.begin() + 18));
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return ops::concat_rows(ops::columns(ops::rows(in[0], 1, 4), 1, 5),
                                ops::columns(in[0], 0, 4));
      },
      {tessera::testing::randn_param(Shape{4, 2, 6}, g)});
  tessera::testing::expect_error([&] { ops::columns(x, 4, 7); }, {"columns", "[4, 7)", "<= 6"});
  tessera::testing::expect_error([&] { ops::rows(x, 3, 5); }, {"rows", "[3, 5)"});
  tessera::testing::expect_error([&] { ops::concat_rows(x, ops::columns(x, 0, 2)); },
                                 {"concat_rows", "does not join"});
}

}  // namespace
