// Heartbeats over rank 0's TCP store (src/dist/store_heartbeat.h), on loopback: ranks are
// threads, a rank that stops beating is a bare heartbeat connection that goes quiet, and rank 0
// suspended or killed is a forked process holding the store. The reaction is recorded instead
// of ending the test process.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "dist/clock.h"
#include "dist/store_heartbeat.h"
#include "store_testing.h"

using namespace tessera::dist;
using namespace tessera::dist::testing;

namespace {

// What a heartbeat reported, and when.
struct Reports {
  std::mutex mu;
  std::condition_variable cv;
  std::string first;
  double at = 0;
  int count = 0;

  StoreHeartbeat::OnLost sink() {
    return [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(mu);
      if (count++ == 0) {
        first = m;
        at = monotonic_seconds();
      }
      cv.notify_all();
    };
  }
  // True when a report came within `seconds`.
  bool wait(double seconds) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return count > 0; });
  }
};

StoreOptions beating(int world, double timeout_s) {
  StoreOptions o = options(world, timeout_s);
  o.heartbeat_s = 0.05;
  return o;
}

void sleep_s(double s) {
  std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

}  // namespace

TEST(StoreHeartbeat, ASilentRankIsNamedAfterTheTimeout) {
  StoreOptions o = beating(2, 1.0);
  TcpStoreServer server(o);
  o.port = server.port();
  Reports seen;
  StoreHeartbeat rank0(o, 0, seen.sink());
  TcpStoreClient rank1(o, 1, StoreLane::heartbeat);
  rank1.beat(false);  // one beat, then silence with the connection open (as under SIGSTOP)
  const double t0 = monotonic_seconds();
  ASSERT_TRUE(seen.wait(5)) << "rank 1's silence was never reported";
  const double took = seen.at - t0;
  EXPECT_NE(seen.first.find("rank 1 stopped responding: no heartbeat for"), std::string::npos)
      << seen.first;
  EXPECT_GE(took, 0.95);  // not before the timeout...
  EXPECT_LT(took, 2.0);   // ...and within about a period after it
  std::printf("[figure] a silent rank named %.2f s after its last beat (timeout 1 s): %s\n", took,
              seen.first.c_str());
}

TEST(StoreHeartbeat, ARankGoneWithoutAGoodbyeIsNamedAtOnce) {
  StoreOptions o = beating(2, 10);
  TcpStoreServer server(o);
  o.port = server.port();
  Reports seen;
  StoreHeartbeat rank0(o, 0, seen.sink());
  double t0 = 0;
  {
    TcpStoreClient rank1(o, 1, StoreLane::heartbeat);
    rank1.beat(false);
    t0 = monotonic_seconds();
  }  // its connection closes, as when its process ends
  ASSERT_TRUE(seen.wait(5));
  EXPECT_NE(seen.first.find("rank 1 is gone: its connection to rank 0's store closed"),
            std::string::npos)
      << seen.first;
  EXPECT_LT(seen.at - t0, 1.0);  // not after the 10 s timeout
}

TEST(StoreHeartbeat, AGoodbyeIsNotAFailure) {
  StoreOptions o = beating(3, 0.5);
  TcpStoreServer server(o);
  o.port = server.port();
  Reports seen0, seen2;
  StoreHeartbeat rank0(o, 0, seen0.sink());
  auto rank1 = std::make_unique<StoreHeartbeat>(o, 1);  // would exit the test if it reported
  StoreHeartbeat rank2(o, 2, seen2.sink());
  sleep_s(0.3);
  rank1->leave();
  rank1.reset();
  sleep_s(1.5);  // three timeouts
  EXPECT_FALSE(seen0.wait(0)) << seen0.first;
  EXPECT_FALSE(seen2.wait(0)) << seen2.first;
  const std::vector<PeerBeat> beats = server.beats();
  ASSERT_EQ(beats.size(), 3u);
  EXPECT_EQ(beats[0].state, BeatState::beating);
  EXPECT_EQ(beats[1].state, BeatState::left);
  EXPECT_EQ(beats[2].state, BeatState::beating);
  EXPECT_LT(beats[0].age_s, 0.5);
}

TEST(StoreHeartbeat, AHeartbeatLaneIsAuthenticatedAndOnePerRank) {
  StoreOptions o = beating(2, 2);
  TcpStoreServer server(o);
  o.port = server.port();
  TcpStoreClient lane(o, 1, StoreLane::heartbeat);
  EXPECT_THROW(TcpStoreClient(o, 1, StoreLane::heartbeat), tessera::Error);  // taken
  StoreOptions wrong = o;
  wrong.token = "another-token-another-token-0000";
  EXPECT_THROW(TcpStoreClient(wrong, 0, StoreLane::heartbeat), tessera::Error);
  TcpStoreClient main1(o, 1);
  EXPECT_THROW(main1.beat(false), tessera::Error);          // beats only on the heartbeat lane
  EXPECT_EQ(server.connected_ranks(), (std::set<int>{1}));  // the lane is not a rank
}

// Rank 0's store in a child process, which the test suspends or kills.
class Rank0Process : public ::testing::Test {
 protected:
  void start(const StoreOptions& o) {
    child_ = ::fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      TcpStoreServer server(o);
      for (;;) ::pause();
    }
  }
  void TearDown() override {
    if (child_ <= 0) return;
    ::kill(child_, SIGKILL);
    ::waitpid(child_, nullptr, 0);
  }
  pid_t child_ = -1;
};

TEST_F(Rank0Process, Rank0SuspendedIsNamedAfterTheTimeout) {
  StoreOptions o = beating(2, 1.5);
  o.port = free_port();
  start(o);
  Reports seen;
  StoreHeartbeat rank1(o, 1, seen.sink());  // connects once the child listens
  sleep_s(0.3);
  EXPECT_FALSE(seen.wait(0)) << seen.first;
  ::kill(child_, SIGSTOP);
  const double t0 = monotonic_seconds();
  ASSERT_TRUE(seen.wait(6)) << "rank 0's suspension was never reported";
  const double took = seen.at - t0;
  EXPECT_NE(seen.first.find("rank 0 stopped responding: its store did not answer a heartbeat"),
            std::string::npos)
      << seen.first;
  EXPECT_GE(took, 1.3);
  EXPECT_LT(took, 3.5);
  std::printf("[figure] rank 0 (the store) suspended: named after %.2f s (timeout 1.5 s)\n", took);
}

TEST_F(Rank0Process, Rank0EndedIsNamedAtOnce) {
  StoreOptions o = beating(2, 10);
  o.port = free_port();
  start(o);
  Reports seen;
  StoreHeartbeat rank1(o, 1, seen.sink());
  sleep_s(0.2);
  ::kill(child_, SIGKILL);
  ::waitpid(child_, nullptr, 0);
  child_ = -1;
  const double t0 = monotonic_seconds();
  ASSERT_TRUE(seen.wait(5));
  EXPECT_NE(seen.first.find("rank 0 is gone: its store closed the heartbeat's connection"),
            std::string::npos)
      << seen.first;
  EXPECT_LT(seen.at - t0, 1.0);
}
