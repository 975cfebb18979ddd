// tessera plan's memory per rank: what a GPU would hold, not what the meta run allocated to
// build the model.
#include <gtest/gtest.h>

#include "core/meta_device.h"
#include "core/rng.h"
#include "nn/decoder.h"
#include "plan/cluster.h"
#include "plan/planner.h"
#include "train/config.h"
#include "train/model_kinds.h"

namespace tessera {
namespace {

// A GPU run builds the whole model on the host and moves only its tensor-parallel part to the
// GPU; the meta run builds it on the meta device. The plan's peak must not count the whole
// model: here 8-way tensor parallelism of a model whose vocabulary dominates it, trained with
// plain SGD, so each rank keeps about 1/8 of it as values, gradients and flat buffers, and its
// peak stays below the whole model's f32 values, which the build alone would reach.
TEST(PlanMemory, GpuPeakLeavesOutTheWholeModelsBuild) {
  const train::Config cfg = train::parse_config(R"(
[model]
kind = "gpt"
n_layer = 2
n_head = 8
n_embd = 512
context = 64
vocab_size = 65536
[data]
kind = "random"
[optim]
name = "sgd"
[train]
batch_size = 2
seq_len = 64
precision = "f32"
eval_every = 0
[parallel]
tp = 8
)",
                                                "test");
  const plan::Plan p = plan::make_plan(cfg, plan::parse_cluster("h100x8"));
  Generator g(1);
  double whole_bytes = 0;  // the whole model's f32 values, counted from its parameters
  {
    meta::BuildOnMeta on_meta;
    for (const Tensor& t : train::make_decoder(cfg, g)->parameters())
      whole_bytes += 4.0 * double(t.numel());
  }
  ASSERT_FALSE(p.memory.empty());
  for (const plan::RankMemory& m : p.memory) {
    EXPECT_LT(m.weights, whole_bytes / 4);
    EXPECT_LT(m.peak_in_use, whole_bytes);  // the whole build alone would reach it
    EXPECT_LT(m.reserved, whole_bytes);
  }
}

// A run fits when its peak of live blocks and the runtime do: the caching allocators give their
// cache back and retry before an allocation fails, so what they cache above the peak does not
// count against the device.
TEST(PlanMemory, FitsOnThePeakNotTheCache) {
  plan::Plan p;
  p.capacity = 100;
  plan::RankMemory m;
  m.peak_in_use = 60;
  m.reserved = 120;
  m.runtime_reserve = 10;
  p.memory = {m};
  EXPECT_DOUBLE_EQ(p.max_required(), 70);
  EXPECT_DOUBLE_EQ(p.max_total(), 130);
  EXPECT_TRUE(p.fits());
  p.memory[0].peak_in_use = 95;
  EXPECT_FALSE(p.fits());
}

}  // namespace
}  // namespace tessera
