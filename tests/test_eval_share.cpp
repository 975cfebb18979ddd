// Evaluation shared by the data-parallel ranks (train/eval_share.h): each batch runs on one
// rank, and every rank ends with every batch's results in batch order. Three ranks as threads
// over rank 0's TCP store (dist/store_comm.h), seven batches (an uneven share).
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "dist/store_comm.h"
#include "store_testing.h"
#include "train/eval_share.h"

using namespace tessera;
using namespace tessera::dist::testing;

namespace {

std::vector<double> result_of(int64_t batch) {
  return {double(batch) + 0.25, double(batch * batch) / 3.0};
}

// Runs evaluate_shared on `world` ranks (threads) over `batches` batches; returns every run as
// (rank, batch) and checks that each rank ends with all results in batch order.
std::vector<std::pair<int, int64_t>> share_over_threads(int world, int64_t batches, bool lockstep) {
  dist::StoreOptions o = options(world, 10);
  o.port = free_port();
  std::mutex mu;
  std::vector<std::pair<int, int64_t>> ran;  // (rank, batch) of every run
  std::vector<std::vector<std::vector<double>>> got(world);
  auto rank_main = [&](int r) {
    dist::StoreCommunicator comm(o, r);
    const train::EvalShare share{&comm, lockstep};
    got[size_t(r)] = train::evaluate_shared(share, batches, 2, [&](int64_t i) {
      std::lock_guard<std::mutex> lock(mu);
      ran.emplace_back(r, i);
      return result_of(i);
    });
  };
  std::vector<std::thread> others;
  for (int r = 1; r < world; ++r) others.emplace_back(rank_main, r);
  rank_main(0);
  for (std::thread& t : others) t.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(got[size_t(r)].size(), size_t(batches)) << "rank " << r;
    for (int64_t i = 0; i < std::min(batches, int64_t(got[size_t(r)].size())); ++i)
      EXPECT_EQ(got[size_t(r)][size_t(i)], result_of(i)) << "rank " << r << ", batch " << i;
  }
  return ran;
}

}  // namespace

TEST(EvalShare, EachBatchRunsOnOneRankAndEveryRankGetsAllInOrder) {
  const int world = 3;
  const int64_t batches = 7;
  std::set<int64_t> seen;
  for (const auto& [rank, batch] : share_over_threads(world, batches, false)) {
    EXPECT_EQ(batch % world, rank) << "batch " << batch << " ran on rank " << rank;
    EXPECT_TRUE(seen.insert(batch).second) << "batch " << batch << " ran twice";
  }
  EXPECT_EQ(seen.size(), size_t(batches));
}

// ZeRO-3's evaluation: every rank runs as many batches (3 of 7 on 3 ranks), the ranks left
// without a batch in the last round a spare one whose result counts nowhere.
TEST(EvalShare, InLockstepEveryRankRunsAsManyBatches) {
  const int world = 3;
  const int64_t batches = 7;
  std::vector<int> runs(world);
  std::vector<int> owners(batches);
  for (const auto& [rank, batch] : share_over_threads(world, batches, true)) {
    ++runs[size_t(rank)];
    if (batch % world == rank) ++owners[size_t(batch)];
  }
  EXPECT_EQ(runs, (std::vector<int>{3, 3, 3}));
  EXPECT_EQ(owners, std::vector<int>(batches, 1)) << "each batch once on its own rank";
  // As many batches as ranks, or none: no spare runs.
  EXPECT_EQ(share_over_threads(world, 3, true).size(), 3u);
  EXPECT_EQ(share_over_threads(world, 0, true).size(), 0u);
}

TEST(EvalShare, OneRankRunsEveryBatch) {
  const train::EvalShare alone{};
  std::vector<int64_t> order;
  const auto got = train::evaluate_shared(alone, 4, 1, [&](int64_t i) {
    order.push_back(i);
    return std::vector<double>{double(i)};
  });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3}));
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3], std::vector<double>{3.0});
  // A result of the wrong width is an internal error, named.
  EXPECT_THROW(train::evaluate_shared(alone, 1, 2, [](int64_t) { return std::vector<double>{1}; }),
               Error);
}
