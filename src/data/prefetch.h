// Prefetcher: prepares the next batches on a background thread while the current one trains.
// PrefetchingBatcher: a batcher read through a Prefetcher, with the position a checkpoint saves.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "core/error.h"

namespace tessera::data {

// Calls `produce` on a worker thread, keeping up to `depth` results queued ahead of the
// consumer. next() returns them in the order produced, so the sequence equals calling produce()
// directly. If produce() throws, the results made before it are still delivered, then next()
// rethrows the exception (and keeps rethrowing it). The destructor stops and joins the worker,
// waiting for at most one in-flight produce() call.
//
// produce() runs on the worker only, so it may own mutable state (a batcher) that the consumer
// must not touch while the Prefetcher lives.
template <class Batch>
class Prefetcher {
 public:
  explicit Prefetcher(std::function<Batch()> produce, int depth = 2)
      : produce_(std::move(produce)), depth_(depth) {
    TS_CHECK(depth >= 1 && depth <= 16, "Prefetcher: depth {} must be in [1, 16]", depth);
    worker_ = std::thread([this] { run(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  Batch next() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (queue_.empty()) std::rethrow_exception(error_);
    Batch b = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    cv_.notify_all();  // room for the worker
    return b;
  }

 private:
  void run() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || int(queue_.size()) < depth_; });
        if (stop_) return;
      }
      try {
        Batch b = produce_();  // outside the lock: this is the work being overlapped
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(b));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = std::current_exception();
      }
      cv_.notify_all();
      std::lock_guard<std::mutex> lock(mu_);
      if (error_) return;  // nothing more to produce; the consumer drains, then sees the error
    }
  }

  std::function<Batch()> produce_;
  const int depth_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread worker_;  // last: starts after every other member exists
};

// A batcher (TokenBatcher, ImageBatcher: next() returning a batch with its next_state, state(),
// set_state()) whose batches are made ahead on a Prefetcher, as the training tasks draw them.
//  - The worker starts with the first next(), not at construction or set_state(): nothing
//    allocates in the background while the engines measure their memory at start-up.
//  - state() is the batcher's position right after the last batch next() returned, not the
//    batcher's own (the worker runs ahead of it): what a checkpoint saves, so that set_state()
//    of it continues exactly after that batch.
//  - set_state() stops and joins the worker (which owns the batcher while it runs), moves the
//    batcher there, and leaves the next next() to start a new worker.
template <class Batcher>
class PrefetchingBatcher {
 public:
  using Batch = decltype(std::declval<Batcher&>().next());
  using State = decltype(std::declval<const Batcher&>().state());

  explicit PrefetchingBatcher(Batcher batcher, int depth = 2)
      : batcher_(std::move(batcher)), depth_(depth), state_(batcher_.state()) {}
  // The worker holds the batcher's address.
  PrefetchingBatcher(const PrefetchingBatcher&) = delete;
  PrefetchingBatcher& operator=(const PrefetchingBatcher&) = delete;

  Batch next() {
    if (!prefetch_)
      prefetch_ =
          std::make_unique<Prefetcher<Batch>>([b = &batcher_] { return b->next(); }, depth_);
    Batch batch = prefetch_->next();
    state_ = batch.next_state;
    return batch;
  }
  const State& state() const { return state_; }
  void set_state(const State& state) {
    prefetch_.reset();
    batcher_.set_state(state);
    state_ = state;
  }

 private:
  Batcher batcher_;
  int depth_;
  State state_;
  std::unique_ptr<Prefetcher<Batch>> prefetch_;  // last: joined before the batcher goes
};

}  // namespace tessera::data
