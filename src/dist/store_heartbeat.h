// Liveness of a torchrun-style job's ranks (no MPI), over rank 0's TCP store: each rank beats on
// its own heartbeat lane (tcp_store.h) from a background thread, and each beat's answer says
// how long ago every other rank last beat. A rank suspended (SIGSTOP), hung in the kernel or cut
// off stops beating, and the others name it within timeout_s (parallel.timeout_s) plus one
// period; a rank whose process ended without a goodbye is named at the next beat; and when rank 0
// itself stops, its store stops answering, and the others name rank 0 after timeout_s. The
// default reaction prints the diagnosis and exits with kPeerLostExitCode, as the MPI backend's
// heartbeat does: the training thread may be blocked inside an NCCL collective that will never
// complete, and only the process's end frees it (and the device's kernels).
//
// The beats go over their own connection, so a long wait on the main one (a collective's keys)
// never delays them.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dist/tcp_store.h"

namespace tessera::dist {

class StoreHeartbeat {
 public:
  // Called once, on the heartbeat thread, with the diagnosis ("rank 1 stopped responding: ...").
  using OnLost = std::function<void(const std::string& message)>;

  // Connects the heartbeat lane (throws Error as TcpStoreClient does) and starts beating.
  // on_lost empty: print "tessera: rank R: <message>. Exiting." and exit kPeerLostExitCode.
  StoreHeartbeat(const StoreOptions& opt, int rank, OnLost on_lost = {});
  // Stops without a goodbye (the others see this rank's lane close: use leave() on a normal end).
  ~StoreHeartbeat();
  StoreHeartbeat(const StoreHeartbeat&) = delete;
  StoreHeartbeat& operator=(const StoreHeartbeat&) = delete;

  // Says goodbye (the others stop watching this rank) and stops beating. Best effort: a store
  // that is gone is not an error here.
  void leave();

  double period_s() const { return period_s_; }

 private:
  void run();
  void check(const std::vector<PeerBeat>& beats);
  void lost(const std::string& message);
  void stop();

  StoreOptions opt_;
  int rank_;
  OnLost on_lost_;
  double period_s_;
  std::unique_ptr<TcpStoreClient> client_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<bool> reported_{false};
  std::thread thread_;
};

}  // namespace tessera::dist
