#include "train/rank_timing.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"
#include "dist/communicator.h"

namespace tessera::train {
namespace {

// The q-quantile of `v` (nearest rank; v not empty).
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, size_t(q * double(v.size())));
  return v[i];
}

// The median of `v` without element `skip` (the middle two averaged; v has two or more).
double median_of_others(const std::vector<double>& v, size_t skip) {
  std::vector<double> o;
  for (size_t i = 0; i < v.size(); ++i)
    if (i != skip) o.push_back(v[i]);
  std::sort(o.begin(), o.end());
  const size_t n = o.size();
  return n % 2 ? o[n / 2] : (o[n / 2 - 1] + o[n / 2]) / 2;
}

}  // namespace

RankTiming::RankTiming(dist::Communicator* comm, double factor) : comm_(comm), factor_(factor) {
  TS_CHECK(factor == 0 || factor > 1,
           "parallel.slow_rank_factor is {}: expected 0 (never warn) or a factor above 1", factor);
}

void RankTiming::add(double compute_ms) {
  window_.push_back(compute_ms);
}

RankTiming::Report RankTiming::report() {
  double mine[2] = {0, 0};
  if (!window_.empty()) mine[0] = quantile(window_, 0.5), mine[1] = quantile(window_, 0.95);
  window_.clear();
  std::vector<std::string> all;
  const std::string bytes(reinterpret_cast<const char*>(mine), sizeof mine);
  if (comm_ && comm_->world_size() > 1)
    all = comm_->all_gather_bytes(bytes);
  else
    all = {bytes};
  Report r;
  for (const std::string& b : all) {
    TS_CHECK(b.size() == sizeof mine, "rank timing: a rank sent {} bytes, expected {}", b.size(),
             sizeof mine);
    double v[2];
    std::memcpy(v, b.data(), sizeof v);
    r.p50_ms.push_back(v[0]);
    r.p95_ms.push_back(v[1]);
  }
  slow_in_a_row_.resize(r.p50_ms.size(), 0);
  r.others_median_ms.resize(r.p50_ms.size(), 0);
  for (size_t rank = 0; rank < r.p50_ms.size(); ++rank) {
    if (r.p50_ms.size() < 2) break;
    r.others_median_ms[rank] = median_of_others(r.p50_ms, rank);
    const bool slow = factor_ > 0 && r.p50_ms[rank] > factor_ * r.others_median_ms[rank];
    slow_in_a_row_[rank] = slow ? slow_in_a_row_[rank] + 1 : 0;
    if (slow_in_a_row_[rank] >= kPatience && warned_.insert(int(rank)).second)
      r.newly_slow.push_back(int(rank));
  }
  return r;
}

}  // namespace tessera::train
