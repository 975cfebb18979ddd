#include "dist/store_heartbeat.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "core/error.h"
#include "dist/clock.h"
#include "dist/mpi_comm.h"  // kPeerLostExitCode (the header builds without MPI)

namespace tessera::dist {

StoreHeartbeat::StoreHeartbeat(const StoreOptions& opt, int rank, OnLost on_lost)
    : opt_(opt),
      rank_(rank),
      on_lost_(std::move(on_lost)),
      period_s_(opt.heartbeat_s > 0 ? opt.heartbeat_s : std::min(1.0, opt.timeout_s / 5)) {
  client_ = std::make_unique<TcpStoreClient>(opt_, rank_, StoreLane::heartbeat);
  thread_ = std::thread([this] { run(); });
}

StoreHeartbeat::~StoreHeartbeat() {
  stop();
}

void StoreHeartbeat::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StoreHeartbeat::leave() {
  stop();
  try {
    client_->beat(/*leaving=*/true);
  } catch (const std::exception&) {
    // Rank 0's store is gone already (it ended first, or failed): nobody is left to tell.
  }
}

void StoreHeartbeat::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    lock.unlock();
    std::vector<PeerBeat> beats;
    const double sent = monotonic_seconds();
    try {
      beats = client_->beat(/*leaving=*/false);
    } catch (const std::exception& e) {
      // Rank 0's store runs inside rank 0's process: no answer within timeout_s means rank 0 is
      // suspended or unreachable; an answer that failed sooner, a closed connection (it ended).
      lock.lock();
      if (stopping_) return;  // this rank is ending anyway
      lock.unlock();
      const double waited = monotonic_seconds() - sent;
      lost(waited >= 0.9 * opt_.timeout_s
               ? fmt::format("rank 0 stopped responding: its store did not answer a heartbeat for "
                             "{:.1f} s (parallel.timeout_s = {}); it died, is suspended or its "
                             "node is unreachable",
                             waited, opt_.timeout_s)
               : fmt::format("rank 0 is gone: its store closed the heartbeat's connection ({})",
                             e.what()));
      return;
    }
    check(beats);
    lock.lock();
    wake_.wait_for(lock, std::chrono::duration<double>(period_s_), [&] { return stopping_; });
  }
}

void StoreHeartbeat::check(const std::vector<PeerBeat>& beats) {
  for (size_t p = 0; p < beats.size(); ++p) {
    if (int(p) == rank_) continue;
    const PeerBeat& b = beats[p];
    if (b.state == BeatState::beating && b.age_s > opt_.timeout_s)
      return lost(fmt::format(
          "rank {} stopped responding: no heartbeat for {:.1f} s (parallel.timeout_s = {}); it "
          "died, is suspended or its node is unreachable",
          p, b.age_s, opt_.timeout_s));
    if (b.state == BeatState::gone)
      return lost(fmt::format(
          "rank {} is gone: its connection to rank 0's store closed {:.1f} s ago without a "
          "goodbye (its process ended: its own log says why)",
          p, b.age_s));
  }
}

void StoreHeartbeat::lost(const std::string& message) {
  if (reported_.exchange(true)) return;
  if (on_lost_) return on_lost_(message);
  std::fprintf(stderr, "tessera: rank %d: %s. Exiting.\n", rank_, message.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(kPeerLostExitCode);
}

}  // namespace tessera::dist
