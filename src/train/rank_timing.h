// Slow ranks: every rank's compute time per step, compared across ranks on logged steps.
//
// A rank's compute time is the host time from the start of a step to the moment it is ready to
// synchronise gradients (dp->finish_backward): data, forward and backward, without the wait for
// the other ranks, which is what a synchronous step spends on its slowest rank. (On a GPU the
// host runs ahead of the device, so there it measures the time to queue the work.) On each
// logged step the ranks exchange the median and 95th percentile of their times since the last
// one (one small all-gather); a rank whose median exceeds `factor` times the median of the
// other ranks' on `kPatience` logged steps in a row is named in a warning, once.
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <vector>

namespace tessera::dist {
class Communicator;
}

namespace tessera::train {

class RankTiming {
 public:
  static constexpr int kPatience = 3;

  // factor 0: never name a rank; otherwise above 1 (parallel.slow_rank_factor).
  RankTiming(dist::Communicator* comm, double factor);

  void add(double compute_ms);  // this rank's step

  struct Report {
    std::vector<double> p50_ms, p95_ms;    // by rank, over the steps since the last report
    std::vector<double> others_median_ms;  // by rank: the median of the other ranks' p50
    std::vector<int> newly_slow;           // ranks slow for kPatience reports in a row, first time
  };
  // Collective (every rank, on the same steps); empty vectors when no step was added.
  Report report();

  const std::set<int>& slow_ranks() const { return warned_; }

 private:
  dist::Communicator* comm_;
  double factor_;
  std::vector<double> window_;      // this rank's times since the last report
  std::vector<int> slow_in_a_row_;  // by rank
  std::set<int> warned_;
};

}  // namespace tessera::train
