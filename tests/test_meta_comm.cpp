// The planner's communicator: groups known without peers, collectives recorded with their group.
#include <gtest/gtest.h>

#include "core/meta_device.h"
#include "dist/mesh.h"
#include "dist/meta_comm.h"
#include "gradcheck.h"

namespace tessera::dist {
namespace {

// Every rank of 16 as pp 2 x dp 2 x cp 2 x tp 2: each axis' group holds the ranks that differ
// only along it, at the index the mesh's rank formula gives.
TEST(MetaCommunicator, MeshAxesMatchTheRankFormula) {
  const int tp = 2, pp = 2, cp = 2, world = 16, dp = world / (tp * pp * cp);
  for (int r = 0; r < world; ++r) {
    Mesh mesh(std::make_shared<MetaCommunicator>(r, world), tp, pp, cp);
    EXPECT_EQ(mesh.shape().dp, dp);
    EXPECT_EQ(mesh.tp_rank(), r % tp) << r;
    EXPECT_EQ(mesh.cp_rank(), r / tp % cp) << r;
    EXPECT_EQ(mesh.dp_rank(), r / (tp * cp) % dp) << r;
    EXPECT_EQ(mesh.pp_rank(), r / (tp * cp * dp)) << r;
    EXPECT_EQ(mesh.pp_rank_of(r), mesh.pp_rank());
    EXPECT_EQ(mesh.tp()->world_size(), tp);
    EXPECT_EQ(mesh.model()->world_size(), tp * pp);
    EXPECT_EQ(mesh.data()->world_size(), dp * cp);
  }
}

// A collective records its bytes and its members as a progression of job ranks; a send names
// the peer's job rank; a wait names the handle.
TEST(MetaCommunicator, RecordsCollectivesWithTheirGroups) {
  meta::Trace trace;
  {
    meta::TraceScope scope(trace);
    Mesh mesh(std::make_shared<MetaCommunicator>(5, 8), /*tp=*/2, /*pp=*/2);  // dp 2
    Tensor t = Tensor::empty(Shape{10}, DType::f32, Device::meta());
    mesh.dp()->all_reduce_async(t)->wait();
    mesh.tp()->all_reduce(t);
    mesh.pp()->send(t, 0);
  }
  std::vector<meta::Event> ev = trace.events();
  ASSERT_EQ(ev.size(), 6u);
  // Rank 5 = pp 1, dp 0, tp 1: its dp group is {5, 7}, tp group {4, 5}, pp group {1, 5}.
  EXPECT_EQ(ev[0].kind, meta::EventKind::collective);
  EXPECT_STREQ(ev[0].collective.op, "all_reduce");
  EXPECT_EQ(ev[0].collective.bytes, 40);
  EXPECT_EQ(ev[0].collective.group.size, 2);
  EXPECT_EQ(ev[0].collective.group.first, 5);
  EXPECT_EQ(ev[0].collective.group.stride, 2);
  EXPECT_EQ(ev[0].collective.group.world, 8);
  EXPECT_EQ(ev[1].kind, meta::EventKind::wait);
  EXPECT_EQ(ev[1].work, ev[0].collective.work);
  EXPECT_EQ(ev[2].collective.group.first, 4);
  EXPECT_EQ(ev[2].collective.group.stride, 1);
  EXPECT_STREQ(ev[4].collective.op, "send");
  EXPECT_EQ(ev[4].collective.peer, 1);
  EXPECT_EQ(ev[4].collective.group.first, 1);
  EXPECT_EQ(ev[4].collective.group.stride, 4);
}

TEST(MetaCommunicator, PlainSplitIsRefusedNamingSplitBy) {
  MetaCommunicator c(0, 4);
  testing::expect_error([&] { c.split(0, 0); }, {"split_by"});
}

}  // namespace
}  // namespace tessera::dist
