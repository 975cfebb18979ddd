// The stream and event objects behind cudaStream_t / cudaEvent_t on the emulated device
// (internal to src/emu; stream.cpp).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "emu/device.h"
#include "emu/streamrace.h"

struct CUstream_st {
  struct Dep {
    CUstream_st* stream;
    uint64_t pos;  // wait until that stream has completed this many tasks
  };
  struct Task {
    std::string what;
    std::function<void()> fn;  // null: a marker (event record, event wait)
    std::vector<Dep> deps;
    std::shared_ptr<const tessera::emu::streamrace::Clock> clock;  // null: unchecked
  };

  CUstream_st(unsigned flags, int priority, bool legacy);
  CUstream_st(const CUstream_st&) = delete;
  CUstream_st& operator=(const CUstream_st&) = delete;

  // Queues a task; returns its position (the stream has run it once `completed` reaches it).
  uint64_t push(std::string what, std::function<void()> fn, std::vector<Dep> deps);
  // Queues the emulator's own bookkeeping (not CUDA work): it runs in this stream's order but
  // adds no ordering between streams (no implicit legacy-stream dependencies, no place in the
  // race check's happens-before order), so it cannot hide a missing event wait.
  uint64_t push_bookkeeping(std::string what, std::function<void()> fn);
  uint64_t position();  // tasks queued so far
  bool reached(uint64_t pos);
  void wait_for(uint64_t pos);
  // The host has seen this stream complete up to `pos` (a synchronisation, or a query that found
  // it done). True when that is news, i.e. work queued since the host last looked: what makes a
  // synchronising call a host wait. Depends only on the host's own order of calls, so counts
  // are deterministic whatever the stream threads' timing.
  bool host_observes(uint64_t pos);
  // Runs what is queued, then ends the thread (cudaStreamDestroy). The object itself stays:
  // other streams' dependencies may still name it.
  void shutdown();

  const unsigned flags;
  const int priority;
  const bool is_legacy;
  std::atomic<bool> destroyed{false};

 private:
  void run();

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Task> queue;
  uint64_t enqueued = 0, completed = 0;
  uint64_t host_seen = 0;
  bool stop = false;
  std::thread worker;  // last: starts once the rest is built
};

// An event: where in which stream it was last recorded, and when that point ran (for
// cudaEventElapsedTime). Shared with the record task, which may run after cudaEventDestroy.
struct EventState {
  std::mutex mu;
  CUstream_st* stream = nullptr;  // null until recorded
  uint64_t pos = 0;
  double ran_at_ms = 0;
};
struct CUevent_st {
  unsigned flags = 0;
  std::shared_ptr<EventState> state = std::make_shared<EventState>();
};

namespace tessera::emu {
CUstream_st* legacy_stream();
CUstream_st* resolve(cudaStream_t s);
CUstream_st* create_stream(unsigned flags, int priority);
std::vector<CUstream_st*> all_streams();
// Records a device fault: prints the report once and makes the error sticky.
void raise_sticky(cudaError_t code, const std::string& report);
// TESSERA_EMU_STREAM_DELAY_US (runtime.h); the work the calling stream thread runs.
unsigned stream_delay_us();
void set_current_work(const std::string* what);
}  // namespace tessera::emu
