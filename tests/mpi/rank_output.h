// gtest output for tests run on several ranks (under mpirun): rank 0 prints as usual, every other
// rank only prints its failures, prefixed with its rank, so the log stays readable.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>

namespace tessera::testing {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "rank %d: %s:%d: failure\n%s\n", rank_,
                   r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }

 private:
  int rank_;
};

// Call after InitGoogleTest, once the rank is known.
inline void print_passes_on_rank0_only(int rank) {
  if (rank == 0) return;
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new RankFailurePrinter(rank));
}

}  // namespace tessera::testing
