// tessera plan --search: only layouts that fit, fastest first, at least as fast as the config's
// own layout, each reproducible from its overrides; and the check before a GPU run (fit_check.h):
// refused with the expected override when the device is too small, passed when it is large.
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend.h"
#include "plan/cluster.h"
#include "plan/fit_check.h"
#include "plan/planner.h"
#include "plan/search.h"
#include "plan_test_config.h"
#include "train/config.h"

using namespace tessera;

namespace {

// tests/plan_test_config.h's tiny Llama, 16 sequences a step in one micro-batch.
train::Config tiny_llama(std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(), {"train.batch_size=16", "train.micro_batches=1"});
  return tessera::testing::tiny_config("llama", overrides);
}

// h100x8 whose devices hold `capacity` bytes (0: the H100's own).
plan::ClusterSpec h100x8(double capacity = 0) {
  plan::ClusterSpec c = plan::parse_cluster("h100x8");
  if (capacity > 0) c.device.memory_bytes = capacity;
  return c;
}

bool near(double a, double b) {
  return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b));
}

void expect_sorted_and_fitting(const plan::SearchResult& r) {
  for (size_t i = 0; i < r.best.size(); ++i) {
    EXPECT_TRUE(r.best[i].plan.fits()) << i;
    if (i > 0) {
      // Ties (within rounding) go to less memory.
      EXPECT_GE(r.best[i - 1].plan.tokens_per_s, r.best[i].plan.tokens_per_s * (1 - 1e-9)) << i;
    }
  }
  EXPECT_EQ(r.tried, r.refused + r.did_not_fit + r.fit);
}

TEST(plan_search, FindsFittingLayoutsFastestFirst) {
  const train::Config cfg = tiny_llama();
  const plan::Plan own = plan::make_plan(cfg, h100x8());
  ASSERT_TRUE(own.fits());
  const plan::SearchResult r = plan::search_layouts(cfg, h100x8(), 0, {.top = 100});
  std::printf("%s", plan::format_search(r).c_str());
  ASSERT_FALSE(r.best.empty());
  expect_sorted_and_fitting(r);
  EXPECT_GT(r.fit, 5);
  EXPECT_GE(r.best.front().plan.tokens_per_s, own.tokens_per_s * (1 - 1e-9));
  // The config's own layout is among them, with its own figures.
  int as_given = 0;
  for (const plan::Candidate& c : r.best)
    if (c.as_given) {
      ++as_given;
      EXPECT_TRUE(c.overrides.empty());
      EXPECT_TRUE(near(c.plan.tokens_per_s, own.tokens_per_s));
    }
  EXPECT_EQ(as_given, 1);
  // --top keeps the fastest.
  const plan::SearchResult top3 = plan::search_layouts(cfg, h100x8(), 0, {.top = 3});
  ASSERT_EQ(top3.best.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(top3.best[i].overrides, r.best[i].overrides) << i;
}

// Devices just too small for the config's own layout: the search keeps only layouts that fit,
// and each one's overrides, parsed with the config and planned again, give the same figures.
TEST(plan_search, TightMemoryKeepsOnlyWhatFitsAndOverridesReproduce) {
  const train::Config cfg = tiny_llama();
  const double own_total = plan::make_plan(cfg, h100x8()).max_required();
  const plan::ClusterSpec tight = h100x8(own_total - 1);
  ASSERT_FALSE(plan::make_plan(cfg, tight).fits());
  const plan::SearchResult r = plan::search_layouts(cfg, tight, 0, {.top = 100});
  std::printf("%s", plan::format_search(r).c_str());
  ASSERT_FALSE(r.best.empty());
  EXPECT_GT(r.did_not_fit, 0);
  expect_sorted_and_fitting(r);
  for (const plan::Candidate& c : r.best) {
    EXPECT_FALSE(c.as_given);
    const train::Config again = tiny_llama(c.overrides);
    EXPECT_EQ(again, c.config) << c.plan.layout;
    const plan::Plan p = plan::make_plan(again, tight);
    EXPECT_TRUE(near(p.tokens_per_s, c.plan.tokens_per_s)) << c.plan.layout;
    EXPECT_TRUE(near(p.timeline.step_seconds, c.plan.timeline.step_seconds)) << c.plan.layout;
    EXPECT_EQ(p.max_required(), c.plan.max_required()) << c.plan.layout;
    EXPECT_NEAR(p.mfu, c.plan.mfu, 1e-12) << c.plan.layout;
  }
  const nlohmann::json j = plan::search_json(r);
  EXPECT_EQ(j["candidates"].size(), r.best.size());
  EXPECT_EQ(j["fit"].get<int>(), r.fit);
}

TEST(plan_fit_check, PassesWhenTheDeviceIsLarge) {
  const plan::FitCheck f = plan::check_fit(tiny_llama(), 1, 80.0 * (1 << 30));
  EXPECT_TRUE(f.fits);
  EXPECT_GT(f.predicted, 0);
  EXPECT_TRUE(f.message.empty());
}

// A device just smaller than the run needs: recomputation is the first suggestion.
TEST(plan_fit_check, SuggestsRecomputation) {
  const train::Config cfg = tiny_llama({"train.batch_size=8"});
  const plan::FitCheck whole = plan::check_fit(cfg, 1, 0);
  const plan::FitCheck rec =
      plan::check_fit(tiny_llama({"train.batch_size=8", "model.recompute=\"blocks\""}), 1, 0);
  ASSERT_LT(rec.predicted, whole.predicted);
  const plan::FitCheck f = plan::check_fit(cfg, 1, rec.predicted);
  EXPECT_FALSE(f.fits);
  EXPECT_EQ(f.fix, std::vector<std::string>{"model.recompute=\"blocks\""});
  EXPECT_EQ(f.fixed_predicted, rec.predicted);
  EXPECT_NE(f.message.find("model.recompute=\"blocks\""), std::string::npos) << f.message;
  EXPECT_NE(f.message.find("--no-fit-check"), std::string::npos) << f.message;
  std::printf("%s\n", f.message.c_str());
}

// Recomputation already on: more micro-batches, then ZeRO over the data-parallel ranks.
TEST(plan_fit_check, SuggestsMicroBatchesThenZero) {
  const train::Config cfg = tiny_llama({"model.recompute=\"blocks\""});
  const double four =
      plan::check_fit(tiny_llama({"model.recompute=\"blocks\"", "train.micro_batches=4"}), 1, 0)
          .predicted;
  const plan::FitCheck f = plan::check_fit(cfg, 1, four);
  ASSERT_FALSE(f.fits);
  EXPECT_EQ(f.fix, std::vector<std::string>{"train.micro_batches=4"}) << f.message;

  // Two data-parallel ranks, micro-batches exhausted (8 per rank, 8 micro-batches): ZeRO-1.
  const train::Config dp2 = tiny_llama({"model.recompute=\"blocks\"", "train.micro_batches=8"});
  const double z1 = plan::check_fit(tiny_llama({"model.recompute=\"blocks\"",
                                                "train.micro_batches=8", "parallel.zero_stage=1"}),
                                    2, 0)
                        .predicted;
  const plan::FitCheck g = plan::check_fit(dp2, 2, z1);
  ASSERT_FALSE(g.fits);
  EXPECT_EQ(g.fix, std::vector<std::string>{"parallel.zero_stage=1"}) << g.message;
}

TEST(plan_fit_check, SaysWhenNothingFits) {
  const plan::FitCheck f = plan::check_fit(tiny_llama(), 1, 1 << 20);
  EXPECT_FALSE(f.fits);
  EXPECT_TRUE(f.fix.empty());
  EXPECT_NE(f.message.find("--search"), std::string::npos) << f.message;
}

// A CPU run is planned with the host allocator's books, which hold no CUDA runtime reserve,
// and its refusal names the memory the trainer described.
TEST(plan_fit_check, CpuRunsUseTheHostsBooksAndNameTheHostMemory) {
  const train::Config cpu = tiny_llama({"train.batch_size=8"});
  ASSERT_EQ(cpu.train.device, "cpu");
  train::Config gpu = cpu;
  gpu.train.device = "cuda";
  const plan::FitCheck c =
      plan::check_fit(cpu, 1, 1 << 20, "0.00 GiB of host memory per rank (2 ranks share ...)");
  const plan::FitCheck g = plan::check_fit(gpu, 1, 1 << 20);
  EXPECT_FALSE(c.fits);
  EXPECT_GT(c.predicted, 0);
  EXPECT_LT(c.predicted + 0.5 * (1 << 30), g.predicted);  // the GPU's 1 GiB runtime reserve
  EXPECT_NE(c.message.find("train.device = \"cpu\""), std::string::npos) << c.message;
  EXPECT_NE(c.message.find("> 0.00 GiB of host memory per rank (2 ranks share"), std::string::npos)
      << c.message;
  EXPECT_NE(g.message.find("GiB of device memory"), std::string::npos) << g.message;
}

}  // namespace
