// Streams and events of the emulated device: one host thread per stream runs its queue in
// order; a task waits first for the positions it depends on in other streams (event waits, and
// the legacy default stream's implicit ordering with blocking streams). runtime.h describes the
// semantics.
#include "emu/stream.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "emu/memory.h"

namespace tessera::emu {
namespace {

std::mutex g_streams_mu;
std::vector<CUstream_st*> g_streams;  // every stream ever created (handles stay valid)

}  // namespace

unsigned stream_delay_us() {
  static const unsigned us = [] {
    const char* e = std::getenv("TESSERA_EMU_STREAM_DELAY_US");
    return e ? unsigned(std::strtoul(e, nullptr, 10)) : 0u;
  }();
  return us;
}

namespace {
thread_local const std::string* t_work = nullptr;
}  // namespace

void set_current_work(const std::string* what) {
  t_work = what;
}

CUstream_st* legacy_stream() {
  static CUstream_st* s = [] {
    auto* st = new CUstream_st(cudaStreamDefault, 0, true);
    std::lock_guard lk(g_streams_mu);
    g_streams.push_back(st);
    return st;
  }();
  return s;
}

CUstream_st* resolve(cudaStream_t s) {
  return s ? s : legacy_stream();
}

CUstream_st* create_stream(unsigned flags, int priority) {
  auto* st = new CUstream_st(flags, priority, false);
  std::lock_guard lk(g_streams_mu);
  g_streams.push_back(st);
  return st;
}

std::vector<CUstream_st*> all_streams() {
  std::lock_guard lk(g_streams_mu);
  return g_streams;
}

void enqueue(cudaStream_t s, std::string what, std::function<void()> task) {
  resolve(s)->push(std::move(what), std::move(task), {});
}

void wait_stream(cudaStream_t s) {
  CUstream_st* st = resolve(s);
  const uint64_t pos = st->position();
  if (st->host_observes(pos)) count_host_wait();
  st->wait_for(pos);
}

const std::string& current_work() {
  static const std::string none;
  return t_work ? *t_work : none;
}

}  // namespace tessera::emu

CUstream_st::CUstream_st(unsigned f, int p, bool legacy)
    : flags(f), priority(p), is_legacy(legacy), worker([this] { run(); }) {}

uint64_t CUstream_st::push(std::string what, std::function<void()> fn, std::vector<Dep> deps) {
  // CUDA's legacy default stream: its work waits for every blocking stream's earlier work, and
  // a blocking stream's work waits for its earlier work.
  const bool blocking = !(flags & cudaStreamNonBlocking);
  if (is_legacy) {
    for (CUstream_st* o : tessera::emu::all_streams())
      if (o != this && !(o->flags & cudaStreamNonBlocking) && !o->destroyed)
        deps.push_back({o, o->position()});
  } else if (blocking) {
    CUstream_st* l = tessera::emu::legacy_stream();
    deps.push_back({l, l->position()});
  }
  std::lock_guard lk(mu);
  const uint64_t pos = enqueued + 1;
  std::vector<tessera::emu::streamrace::After> after;
  for (const Dep& d : deps) after.push_back({d.stream, d.pos});
  auto clock = tessera::emu::streamrace::queued(this, pos, after, what);
  queue.push_back(Task{std::move(what), std::move(fn), std::move(deps), std::move(clock)});
  ++enqueued;
  cv.notify_all();
  return pos;
}

uint64_t CUstream_st::push_bookkeeping(std::string what, std::function<void()> fn) {
  std::lock_guard lk(mu);
  queue.push_back(Task{std::move(what), std::move(fn), {}, nullptr});
  cv.notify_all();
  return ++enqueued;
}

uint64_t CUstream_st::position() {
  std::lock_guard lk(mu);
  return enqueued;
}

bool CUstream_st::reached(uint64_t pos) {
  std::lock_guard lk(mu);
  return completed >= pos;
}

bool CUstream_st::host_observes(uint64_t pos) {
  {
    std::lock_guard lk(mu);
    if (pos <= host_seen) return false;
    host_seen = pos;
  }
  tessera::emu::pinned_observed(this, pos);  // the host may touch what copies up to pos used
  tessera::emu::streamrace::host_observed(this, pos);  // what it queues next comes after them
  return true;
}

void CUstream_st::wait_for(uint64_t pos) {
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return completed >= pos; });
}

void CUstream_st::run() {
  for (;;) {
    Task t;
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return stop || !queue.empty(); });
      if (queue.empty()) return;  // stop, and nothing left
      t = std::move(queue.front());
      queue.pop_front();
    }
    for (const Dep& d : t.deps) d.stream->wait_for(d.pos);
    if (tessera::emu::stream_delay_us())
      std::this_thread::sleep_for(std::chrono::microseconds(tessera::emu::stream_delay_us()));
    if (t.fn && tessera::emu::sticky_error() == cudaSuccess) {
      tessera::emu::set_current_work(&t.what);
      tessera::emu::streamrace::begin_task(t.clock.get());
      try {
        t.fn();
      } catch (const tessera::emu::DeviceFault& f) {
        tessera::emu::raise_sticky(f.code(), f.what());
      } catch (const std::exception& e) {
        tessera::emu::raise_sticky(cudaErrorLaunchFailure, t.what + ": " + e.what());
      }
      if (std::string race = tessera::emu::streamrace::end_task(); !race.empty()) {
        char stream[32];
        std::snprintf(stream, sizeof stream, "%p", static_cast<void*>(this));
        tessera::emu::raise_sticky(cudaErrorLaunchFailure,
                                   t.what + " on stream " + stream + ": " + race);
      }
      tessera::emu::set_current_work(nullptr);
    }
    std::lock_guard lk(mu);
    ++completed;
    cv.notify_all();
  }
}

void CUstream_st::shutdown() {
  {
    std::lock_guard lk(mu);
    stop = true;
    destroyed = true;
    cv.notify_all();
  }
  if (worker.joinable()) worker.join();
}
