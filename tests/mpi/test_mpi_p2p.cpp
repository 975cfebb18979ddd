// Point-to-point transfers of the MPI communicator under mpirun (CTest: mpi_p2p_4_ranks):
// a ring exchange, many messages in flight arriving in order, both directions at once with
// different sizes, argument errors, size mismatches, and a peer that never posts its side
// (an Error after MpiOptions::p2p_timeout_s, not a hang).
//
// Every rank runs every test; tests wait on all their transfers before checking anything, and
// end with a barrier so that one test's messages never meet the next one's.
#include <gtest/gtest.h>

#include <cstdio>
#include <numeric>

#include "dist/mpi_comm.h"
#include "gradcheck.h"
#include "mpi/rank_output.h"

using namespace tessera;
using namespace tessera::dist;
using tessera::testing::expect_error;

namespace {

std::shared_ptr<Communicator> g_world;
Communicator& world() {
  return *g_world;
}
constexpr double kP2PTimeout = 2;  // the stall tests wait this long

// n floats that say who sent them and which message they were: from * 1000 + k + i / n.
Tensor message(int from, int k, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(from * 1000 + k) + float(i) / float(n);
  return Tensor::from_vector(v, Shape{n});
}

// The message of the Error f throws ("" when it does not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(MpiP2P, RingExchangeInOneBatchAndAsSeparateCalls) {
  const int r = world().rank(), n = world().world_size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  Tensor in_batch = Tensor::zeros(Shape{300});
  world().batch_send_recv({P2POp::send(message(r, 0, 300), next), P2POp::recv(in_batch, prev)});
  // MPI progresses each transfer on its own: a send and a recv started apart do not deadlock.
  Tensor in_apart = Tensor::zeros(Shape{300});
  WorkHandle s = world().send_async(message(r, 1, 300), next);
  WorkHandle q = world().recv_async(in_apart, prev);
  q->wait();
  s->wait();
  EXPECT_EQ(in_batch.to_vector(), message(prev, 0, 300).to_vector());
  EXPECT_EQ(in_apart.to_vector(), message(prev, 1, 300).to_vector());
  EXPECT_TRUE(s->done());
  EXPECT_GE(q->end_time(), q->start_time());
  world().barrier();
}

TEST(MpiP2P, ManyMessagesInFlightArriveInTheOrderSent) {
  const int r = world().rank(), n = world().world_size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  constexpr int kMessages = 40;
  // Sizes from 1 float to past the shared-memory eager limit, so that small messages could
  // overtake large ones if order were not kept.
  auto size_of = [](int k) { return int64_t(1) << (k % 16); };
  std::vector<Tensor> in;
  std::vector<WorkHandle> works;
  for (int k = 0; k < kMessages; ++k) {
    in.push_back(Tensor::zeros(Shape{size_of(k)}));
    works.push_back(world().recv_async(in.back(), prev));
    works.push_back(world().send_async(message(r, k, size_of(k)), next));
  }
  for (auto it = works.rbegin(); it != works.rend(); ++it) (*it)->wait();
  for (int k = 0; k < kMessages; ++k)
    EXPECT_EQ(in[size_t(k)].to_vector(), message(prev, k, size_of(k)).to_vector())
        << "message " << k;
  world().barrier();
}

TEST(MpiP2P, BothDirectionsAtOnceWithDifferentSizes) {
  const int r = world().rank();
  const int partner = r ^ 1;  // pairs (0, 1), (2, 3)
  if (partner >= world().world_size()) GTEST_SKIP() << "needs an even number of ranks";
  // Large (rendezvous protocol: a send waits for its recv) and different each way.
  const int64_t mine = 300000 + 1000 * r, theirs = 300000 + 1000 * partner;
  Tensor in = Tensor::zeros(Shape{theirs});
  // Both ranks start with their send: MPI's sends do not block the recv started after them.
  WorkHandle s = world().send_async(message(r, 7, mine), partner);
  WorkHandle q = world().recv_async(in, partner);
  s->wait();
  q->wait();
  EXPECT_EQ(in.to_vector(), message(partner, 7, theirs).to_vector());
  // The blocking forms, ordered so that they meet: the lower rank sends first.
  Tensor back = Tensor::zeros(Shape{5});
  if (r < partner) {
    world().send(message(r, 8, 5), partner);
    world().recv(back, partner);
  } else {
    world().recv(back, partner);
    world().send(message(r, 8, 5), partner);
  }
  EXPECT_EQ(back.to_vector(), message(partner, 8, 5).to_vector());
  world().barrier();
}

TEST(MpiP2P, SplitCommunicatorsUseTheirOwnRanks) {
  const int r = world().rank();
  std::unique_ptr<Communicator> half = world().split(r % 2, r);
  const int hr = half->rank(), hn = half->world_size();
  Tensor in = Tensor::zeros(Shape{3});
  half->batch_send_recv(
      {P2POp::send(message(r, 9, 3), (hr + 1) % hn), P2POp::recv(in, (hr + hn - 1) % hn)});
  // Split rank hr - 1 of this half is world rank r - 2 (mod n), same parity.
  const int n = world().world_size();
  EXPECT_EQ(in.to_vector(), message((r + n - 2) % n, 9, 3).to_vector());
  world().barrier();
}

TEST(MpiP2P, ArgumentErrorsNameTheCallThePeerAndTheTensor) {
  const int r = world().rank(), n = world().world_size();
  Tensor t = Tensor::zeros(Shape{4, 6});
  expect_error([&] { world().send_async(t, n); },
               {"send(peer " + std::to_string(n) + ")", "f32[4, 6]",
                "out of range [0, " + std::to_string(n) + ")"});
  expect_error([&] { world().recv_async(t, -1); }, {"recv(peer -1)", "out of range"});
  expect_error([&] { world().send_async(t, r); },
               {"send(peer " + std::to_string(r) + ")", "cannot send to itself"});
  expect_error([&] { world().recv_async(t, r); }, {"cannot receive from itself"});
  expect_error([&] { world().send_async(t.transpose_view(0, 1), (r + 1) % n); },
               {"send(peer", "not contiguous"});
  expect_error([&] { world().recv_async(Tensor::zeros(Shape{4}, DType::i32), (r + 1) % n); },
               {"recv(peer", "i32[4]", "expected f32"});
  expect_error([&] { world().send_async(Tensor(), (r + 1) % n); }, {"send(peer", "undefined"});
  // A batch is checked whole before any of it starts: nothing is left posted.
  expect_error(
      [&] {
        world().batch_send_recv_async({P2POp::send(t, (r + 1) % n), P2POp::recv(t, r)});
      },
      {"recv(peer " + std::to_string(r) + ")", "itself"});
  world().barrier();
}

TEST(MpiP2P, SizeMismatchesAreErrorsAtTheReceiver) {
  const int r = world().rank();
  if (r > 1) {
    world().barrier();
    return;
  }
  std::string shorter, longer;
  if (r == 0) {
    world().send(message(0, 1, 10), 1);
    world().send(message(0, 2, 10), 1);
  } else {
    Tensor five = Tensor::zeros(Shape{5}), twenty = Tensor::zeros(Shape{20});
    shorter = error_of([&] { world().recv(five, 0); });
    longer = error_of([&] { world().recv(twenty, 0); });
  }
  world().barrier();
  if (r == 1) {
    EXPECT_NE(shorter.find("recv of f32[5] from rank 0"), std::string::npos) << shorter;
    EXPECT_NE(shorter.find("more than 5 elements"), std::string::npos) << shorter;
    EXPECT_NE(longer.find("recv of f32[20] from rank 0"), std::string::npos) << longer;
    EXPECT_NE(longer.find("holds 10 elements"), std::string::npos) << longer;
  }
}

TEST(MpiP2P, ARecvWhosePeerNeverSendsFailsAfterTheTimeout) {
  const int r = world().rank();
  std::string error;
  if (r == 1) error = error_of([&] { world().recv(Tensor::zeros(Shape{8}), 0); });
  world().barrier();
  if (r == 1) {
    EXPECT_NE(error.find("recv of f32[8] from rank 0 (rank 1) not complete after 2 s"),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("has not posted the matching send"), std::string::npos) << error;
  }
  // The cancelled recv is gone: the next message from 0 to 1 goes to the next recv.
  Tensor in = Tensor::zeros(Shape{8});
  if (r == 0) world().send(message(0, 3, 8), 1);
  if (r == 1) {
    world().recv(in, 0);
    EXPECT_EQ(in.to_vector(), message(0, 3, 8).to_vector());
  }
  world().barrier();
}

TEST(MpiP2P, ASendWhosePeerNeverReceivesFailsAfterTheTimeoutAndStaysDeliverable) {
  const int r = world().rank();
  const int64_t big = 1 << 20;  // past the eager limit: the send needs the recv to complete
  std::string error;
  if (r == 0) error = error_of([&] { world().send(message(0, 4, big), 1); });
  world().barrier();
  if (r == 0) {
    EXPECT_NE(error.find("send of f32[1048576] to rank 1 (rank 0) not complete after 2 s"),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("has not posted the matching recv"), std::string::npos) << error;
  }
  // MPI cannot take a send back: it stays posted, holding its tensor, and a late recv gets it.
  Tensor late = Tensor::zeros(Shape{big});
  if (r == 1) {
    world().recv(late, 0);
    EXPECT_EQ(late.to_vector(), message(0, 4, big).to_vector());
  }
  world().barrier();
}

}  // namespace

// tests/mpi/mpi_test_main.h's run_mpi_tests, with a short point-to-point timeout for the stall
// tests.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  MpiOptions mo;
  mo.timeout_s = 30;
  mo.p2p_timeout_s = kP2PTimeout;
  g_world = mpi_world(mo);
  TS_CHECK(g_world->world_size() >= 2, "test_mpi_p2p needs at least 2 ranks (mpirun -np 4)");
  tessera::testing::print_passes_on_rank0_only(g_world->rank());
  const int rc = RUN_ALL_TESTS();
  if (rc != 0) std::fprintf(stderr, "rank %d: tests FAILED\n", g_world->rank());
  g_world.reset();
  mpi_shutdown();
  return rc;
}
