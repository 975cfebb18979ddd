// Pipeline schedules (src/dist/pipeline_schedule.h): every schedule for p in 1..8, m in 1..32,
// v in 1..4 finishes in the simulator (no deadlock, dependencies respected), with the bubble
// and activation memory each schedule is known for; and the simulator itself catches
// deadlocks, messages that meet the wrong partner and missing inputs.
#include <gtest/gtest.h>

#include <map>

#include "dist/pipeline_schedule.h"
#include "gradcheck.h"

using namespace tessera;
using namespace tessera::dist::pipeline;
using tessera::testing::expect_error;

namespace {

constexpr ScheduleKind kKinds[] = {ScheduleKind::gpipe, ScheduleKind::one_f_one_b,
                                   ScheduleKind::interleaved_1f1b};

bool fits(ScheduleKind kind, int p, int m, int v) {
  if (kind != ScheduleKind::interleaved_1f1b) return v == 1;
  if (kind == ScheduleKind::interleaved_1f1b) return v == 1 || m % p == 0;
  return true;
}

std::string where(ScheduleKind kind, int p, int m, int v) {
  return schedule_name(kind) + " p=" + std::to_string(p) + " m=" + std::to_string(m) +
         " v=" + std::to_string(v);
}

// Checked here without the simulator: each rank computes exactly its own stages' (micro,
// stage) pairs, once each, forward before backward.
void expect_each_unit_once_forward_first(const Schedule& s, const std::string& at) {
  for (int r = 0; r < s.p; ++r) {
    std::map<std::pair<int, int>, int> forward_at, backward_at;
    int index = 0;
    for (const Step& step : s.ranks[size_t(r)])
      for (const Action& a : step) {
        ++index;
        if (is_transfer(a.op)) continue;
        ASSERT_EQ(a.stage % s.p, r) << at << ": " << a.str();
        auto& seen = a.op == Op::forward ? forward_at : backward_at;
        ASSERT_EQ(seen.count({a.micro, a.stage}), 0u) << at << ": " << a.str() << " twice";
        seen[{a.micro, a.stage}] = index;
      }
    ASSERT_EQ(forward_at.size(), size_t(s.m * s.v)) << at << " rank " << r;
    ASSERT_EQ(backward_at.size(), size_t(s.m * s.v)) << at << " rank " << r;
    for (const auto& [unit, f] : forward_at)
      ASSERT_LT(f, backward_at.at(unit)) << at << ": micro " << unit.first << " stage "
                                         << unit.second << " backward before forward";
  }
}

// Warm-up forwards of rank r in Megatron-LM's interleaved schedule, capped at all m * v.
int interleaved_warmup(int p, int m, int v, int r) {
  return std::min((p - 1 - r) * 2 + (v - 1) * p, m * v);
}

TEST(PipelineSchedule, EverySizeFinishesWithDependenciesRespected) {
  int simulated = 0;
  for (ScheduleKind kind : kKinds)
    for (int p = 1; p <= 8; ++p)
      for (int m = 1; m <= 32; ++m)
        for (int v = 1; v <= 4; ++v) {
          if (!fits(kind, p, m, v)) continue;
          const std::string at = where(kind, p, m, v);
          const Schedule s = make_schedule(kind, p, m, v);
          ASSERT_EQ(int(s.ranks.size()), p) << at;
          expect_each_unit_once_forward_first(s, at);
          const SimResult r = simulate(s);
          ASSERT_TRUE(r.ok) << at << ": " << r.error;
          ++simulated;
        }
  // gpipe and 1f1b: v = 1; interleaved: v = 1 for every m, v > 1 for m % p == 0.
  int interleaved = 0;
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 32; ++m) interleaved += 1 + (m % p == 0 ? 3 : 0);
  EXPECT_EQ(simulated, 2 * 8 * 32 + interleaved);
}

TEST(PipelineSchedule, OneFOneBBubbleAndMemory) {
  for (const SimCosts costs : {SimCosts{1, 1, 0}, SimCosts{1, 2, 0}})
    for (int p = 1; p <= 8; ++p)
      for (int m = 1; m <= 32; ++m) {
        const std::string at = where(ScheduleKind::one_f_one_b, p, m, 1) +
                               " backward=" + std::to_string(costs.backward);
        const SimResult r = simulate(make_schedule(ScheduleKind::one_f_one_b, p, m), costs);
        ASSERT_TRUE(r.ok) << at << ": " << r.error;
        const double f_b = costs.forward + costs.backward;
        EXPECT_DOUBLE_EQ(r.makespan, (m + p - 1) * f_b) << at;
        EXPECT_NEAR(r.bubble_fraction, double(p - 1) / (m + p - 1), 1e-12) << at;
        for (int rank = 0; rank < p; ++rank) {
          EXPECT_LE(r.peak_live_activations[size_t(rank)], p) << at << " rank " << rank;
          EXPECT_EQ(r.peak_live_activations[size_t(rank)], std::min(p - rank, m))
              << at << " rank " << rank;
          EXPECT_DOUBLE_EQ(r.busy[size_t(rank)], m * f_b) << at << " rank " << rank;
        }
      }
}

TEST(PipelineSchedule, GPipeKeepsEveryActivationAlive) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 32; ++m) {
      const std::string at = where(ScheduleKind::gpipe, p, m, 1);
      const SimResult r = simulate(make_schedule(ScheduleKind::gpipe, p, m), SimCosts{1, 2, 0});
      ASSERT_TRUE(r.ok) << at << ": " << r.error;
      for (int rank = 0; rank < p; ++rank)
        EXPECT_EQ(r.peak_live_activations[size_t(rank)], m) << at << " rank " << rank;
      // Forwards fill and drain the pipe once, backwards once: the same bubble as 1F1B.
      EXPECT_NEAR(r.bubble_fraction, double(p - 1) / (m + p - 1), 1e-12) << at;
    }
}

// With chunk costs f and b, the ideal is v m (f + b) per rank plus one fill and one drain of
// (p - 1) chunk steps: bubble (p - 1) / (v m + p - 1), 1F1B's divided by about v.
TEST(PipelineSchedule, InterleavedBubbleShrinksWithVirtualStages) {
  for (const SimCosts costs : {SimCosts{1, 1, 0}, SimCosts{1, 2, 0}})
    for (int p = 1; p <= 8; ++p)
      for (int m = p; m <= 32; m += p)
        for (int v = 1; v <= 4; ++v) {
          const std::string at = where(ScheduleKind::interleaved_1f1b, p, m, v) +
                                 " backward=" + std::to_string(costs.backward);
          const SimResult r =
              simulate(make_schedule(ScheduleKind::interleaved_1f1b, p, m, v), costs);
          ASSERT_TRUE(r.ok) << at << ": " << r.error;
          const double f_b = costs.forward + costs.backward;
          EXPECT_DOUBLE_EQ(r.makespan, (v * m + p - 1) * f_b) << at;
          EXPECT_NEAR(r.bubble_fraction, double(p - 1) / (v * m + p - 1), 1e-12) << at;
          for (int rank = 0; rank < p; ++rank) {
            const int bound = v == 1 ? std::min(p - rank, m)
                                     : std::min(interleaved_warmup(p, m, v, rank) + 1, m * v);
            EXPECT_LE(r.peak_live_activations[size_t(rank)], bound) << at << " rank " << rank;
          }
        }
}

TEST(PipelineSchedule, InterleavedWithOneVirtualStageIsOneFOneB) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 32; ++m)
      EXPECT_EQ(make_schedule(ScheduleKind::interleaved_1f1b, p, m, 1).ranks,
                make_schedule(ScheduleKind::one_f_one_b, p, m, 1).ranks)
          << "p=" << p << " m=" << m;
}

TEST(PipelineSchedule, ArgumentsThatDoNotFitAreRefused) {
  expect_error([] { make_schedule(ScheduleKind::interleaved_1f1b, 4, 6, 2); },
               {"interleaved_1f1b", "m = 6", "not a multiple of p = 4", "such as 8"});
  expect_error([] { make_schedule(ScheduleKind::one_f_one_b, 4, 8, 2); },
               {"1f1b", "v = 2", "interleaved_1f1b"});
  expect_error([] { make_schedule(ScheduleKind::gpipe, 4, 8, 3); },
               {"gpipe", "v = 3", "interleaved_1f1b"});
  expect_error([] { make_schedule(ScheduleKind::gpipe, 0, 8, 1); }, {"gpipe", "p = 0"});
  expect_error([] { make_schedule(ScheduleKind::gpipe, 2, 0, 1); }, {"m = 0"});
}

TEST(PipelineSchedule, OneFOneBRankListsHaveTheExpectedShape) {
  // p = 3, m = 4: rank 0 warms up with 2 forwards, rank 2 with none.
  const Schedule s = make_schedule(ScheduleKind::one_f_one_b, 3, 4);
  auto compute = [&](int r) {
    std::string out;
    for (const Step& step : s.ranks[size_t(r)])
      if (!is_transfer(step[0].op))
        out += op_name(step[0].op) + std::to_string(step[0].micro) + " ";
    return out;
  };
  EXPECT_EQ(compute(0), "F0 F1 F2 B0 F3 B1 B2 B3 ");
  EXPECT_EQ(compute(1), "F0 F1 B0 F2 B1 F3 B2 B3 ");
  EXPECT_EQ(compute(2), "F0 B0 F1 B1 F2 B2 F3 B3 ");
  // Rank 1 after F1: one batch sends F1's activation on and receives B0's gradient.
  const Step& batch = s.ranks[1][4];
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0], (Action{Op::send_activation, 1, 1, 2}));
  EXPECT_EQ(batch[1], (Action{Op::recv_gradient, 0, 2, 2}));
}

TEST(PipelineSimulator, TransferLatencyAddsToTheCriticalPath) {
  // F0 [0, 1], activation [1, 1.5], F1 [1.5, 2.5], B1 [2.5, 4.5], gradient [4.5, 5], B0 [5, 7].
  const SimResult r = simulate(make_schedule(ScheduleKind::one_f_one_b, 2, 1), SimCosts{1, 2, 0.5});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_DOUBLE_EQ(r.makespan, 7.0);
  EXPECT_NEAR(r.bubble_fraction, 1 - 6.0 / 14.0, 1e-12);
}

// Two ranks, one micro-batch, written by hand.
Schedule two_ranks(std::vector<Step> rank0, std::vector<Step> rank1, int m = 1) {
  return Schedule{ScheduleKind::one_f_one_b, 2, m, 1, {std::move(rank0), std::move(rank1)}};
}
constexpr Action F(int micro, int stage) {
  return {Op::forward, micro, stage, -1};
}
constexpr Action B(int micro, int stage) {
  return {Op::backward, micro, stage, -1};
}

TEST(PipelineSimulator, ReportsADeadlockNamingEachRankAndAction) {
  // Rank 0 waits for the gradient before it has sent the activation that produces it.
  const SimResult r = simulate(two_ranks(
      {{F(0, 0)}, {{Op::recv_gradient, 0, 1, 1}}, {{Op::send_activation, 0, 0, 1}}, {B(0, 0)}},
      {{{Op::recv_activation, 0, 0, 0}}, {F(0, 1)}, {B(0, 1)}, {{Op::send_gradient, 0, 1, 0}}}));
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("deadlock"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("rank 0 waits in step 1: recv gradient (micro 0, stage 1) from rank 1"),
            std::string::npos)
      << r.error;
  EXPECT_NE(r.error.find("rank 1 waits in step 0: recv activation (micro 0, stage 0) from rank 0"),
            std::string::npos)
      << r.error;
}

TEST(PipelineSimulator, SendsAndRecvsPostedApartDeadlockWhereBatchesDoNot) {
  // 1F1B's steady state with every batch split into single transfers: rank r blocks sending an
  // activation to r + 1 while r + 1 blocks sending r a gradient.
  Schedule s = make_schedule(ScheduleKind::one_f_one_b, 4, 8);
  ASSERT_TRUE(simulate(s).ok);
  for (auto& steps : s.ranks) {
    std::vector<Step> split;
    for (const Step& step : steps)
      for (const Action& a : step) split.push_back({a});
    steps = split;
  }
  const SimResult r = simulate(s);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("deadlock"), std::string::npos) << r.error;
}

TEST(PipelineSimulator, ReportsAMessageThatMeetsTheWrongPartner) {
  // Rank 1 expects micro-batch 1's activation first; rank 0 sends micro-batch 0's first.
  const SimResult r = simulate(two_ranks(
      {{F(0, 0)}, {{Op::send_activation, 0, 0, 1}}, {F(1, 0)}, {{Op::send_activation, 1, 0, 1}}},
      {{{Op::recv_activation, 1, 0, 0}}, {F(1, 1)}, {{Op::recv_activation, 0, 0, 0}}}, 2));
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("message 0 from rank 0 to rank 1 is send activation (micro 0, stage 0) "
                         "to rank 1 but rank 1 expects it to be recv activation (micro 1"),
            std::string::npos)
      << r.error;
}

TEST(PipelineSimulator, ReportsComputeWithoutItsInput) {
  // Rank 1 forgot to receive stage 0's activation.
  const SimResult r = simulate(two_ranks({{F(0, 0)}}, {{F(0, 1)}}));
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("F(micro 0, stage 1) runs before its input activation"), std::string::npos)
      << r.error;
}

}  // namespace
