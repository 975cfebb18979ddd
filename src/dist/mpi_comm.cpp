// The MPI backend: a communication thread that owns MPI (see mpi_comm.h for the design).
#include "dist/mpi_comm.h"

#if TESSERA_HAVE_MPI

#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/host_cores.h"
#include "core/profiler.h"
#include "dist/beat.h"
#include "dist/clock.h"
#include "dist/ring_schedule.h"

namespace tessera::dist {
namespace {

constexpr int kTagHeartbeat = 7;
// Point-to-point messages travel on the communicator itself (collectives and heartbeats never
// meet them: MPI keeps collective traffic apart, and heartbeats have their own communicator).
constexpr int kTagP2P = 11;
// Ring collectives' transfers travel on the communicator too, each collective under its own tag
// (kTagRingFirst + its sequence number modulo kRingTags): two rings in flight at once never
// match each other's messages.
constexpr int kTagRingFirst = 1000;
constexpr int kRingTags = 16384;
// How the thread paces its MPI_Test sweeps while operations are in flight. Open MPI moves a
// non-blocking collective forward only inside MPI calls, a few shared-memory fragments per
// call, so the pause between sweeps caps the bandwidth: 30 us pauses held a 1 MiB all-reduce on
// one node to 0.3 GB/s, against 5-7 GB/s for MPI_Allreduce (bench/collectives.sh). While a
// caller is blocked in wait() its core is free, so the thread sweeps without pausing (yielding
// the core to anything else runnable); while every caller computes (communication overlapping
// the backward pass) it pauses kPollInterval between sweeps, not to steal a core from the
// training thread on an oversubscribed node.
constexpr auto kPollInterval = std::chrono::microseconds(30);

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(buf, size_t(len));
}

std::string thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "SINGLE";
    case MPI_THREAD_FUNNELED:
      return "FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MULTIPLE";
  }
  return fmt::format("{}", level);
}

int to_int_count(const char* op, int64_t n) {
  TS_CHECK(n >= 0 && n <= INT_MAX, "{}: {} elements do not fit an MPI count (at most {})", op, n,
           INT_MAX);
  return int(n);
}

// The callers blocked in wait() on any operation of the runtime, and how to wake the
// communication thread when one arrives (it may be waiting for exactly that).
struct Waiters {
  std::atomic<int> count{0};
  std::mutex& runtime_mu;
  std::condition_variable& runtime_cv;
  void arrive() {
    count.fetch_add(1, std::memory_order_relaxed);
    { std::lock_guard<std::mutex> lock(runtime_mu); }  // the thread is waiting or will see it
    runtime_cv.notify_all();
  }
  void leave() { count.fetch_sub(1, std::memory_order_relaxed); }
  bool any() const { return count.load(std::memory_order_relaxed) > 0; }
};

class MpiWork final : public Work {
 public:
  MpiWork(std::string what, Waiters& waiters)
      : what_(std::move(what)), start_(monotonic_seconds()), waiters_(waiters) {}
  void wait() override {
    prof::Scope waiting(prof::Family::comm, "mpi_wait");
    if (!done()) {
      waiters_.arrive();
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return done_; });
      waiters_.leave();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.empty()) throw Error(error_);
  }
  bool done() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  double start_time() const override { return start_; }
  double end_time() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return end_;
  }
  void complete(std::string error = {}) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      error_ = std::move(error);
      end_ = monotonic_seconds();
    }
    cv_.notify_all();
  }
  const std::string& what() const { return what_; }

 private:
  std::string what_;
  double start_;
  Waiters& waiters_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  double end_ = 0;
  std::string error_;
};

// One queued or in-flight operation. `start` issues the non-blocking call (one request, or two
// for a ring step) and returns its MPI status code; `next_stage`, when set, runs once they are
// complete and either starts the operation's next stage (returning its status code) or returns
// nullopt when there is none; `finish` runs on the communication thread once it is all done.
struct Op {
  std::shared_ptr<MpiWork> work;
  std::function<int(MPI_Request*)> start;
  std::function<std::optional<int>(MPI_Request*)> next_stage;
  std::function<void()> finish;
  MPI_Request reqs[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  MPI_Status status{};
  double failed_at = 0;  // when MPI returned an error (the report waits for the heartbeat)
  std::string error;
  // Point-to-point only. A recv checks that the message had recv_count elements. An operation
  // not complete after stall_timeout_s is reported failed (its waiter wakes with an Error) but
  // stays in flight, holding its tensor, until MPI is done with it: a recv is cancelled, a send
  // (which MPI cannot reliably cancel) completes once the peer receives it.
  int64_t recv_count = -1;
  double stall_timeout_s = 0;
  bool stalled = false;
  bool p2p = false;
  // What the heartbeat says about it (beat.h): its index in this rank's submission order, its
  // kind, the peer of a send or recv.
  long long index = -1;
  OpKind kind = OpKind::other;
  int peer = -1;
};

// A ring collective (dist/ring_schedule.h) as the communication thread runs it: each stage sends
// one segment to the next rank and receives one from the previous, then adds what arrived
// (`sum_into[i] += sum_from[i]`, then `*= scale`) when the stage reduces. The pointers are into
// the caller's tensors and the run's own scratch, which the operation's closures keep alive.
struct RingTransfer {
  const float* send = nullptr;
  int send_count = 0;
  float* recv = nullptr;
  int recv_count = 0;
  float* sum_into = nullptr;  // null: the stage only moves data
  const float* sum_from = nullptr;
  float scale = 1.f;
};

struct RingRun {
  MPI_Comm comm = MPI_COMM_NULL;
  int tag = 0, next = 0, prev = 0;
  // Copied before the first stage (an all-gather's own share into its slot of the output).
  const float* copy_from = nullptr;
  float* copy_to = nullptr;
  int64_t copy_count = 0;
  std::vector<RingTransfer> stages;
  Tensor scratch[2];  // from the host caching allocator: reused across calls, never zeroed
  size_t stage = 0;

  int begin(MPI_Request* reqs) const {
    if (copy_from && copy_from != copy_to)
      std::memcpy(copy_to, copy_from, size_t(copy_count) * sizeof(float));
    return post(reqs);
  }
  int post(MPI_Request* reqs) const {
    const RingTransfer& t = stages[stage];
    int rc = MPI_Irecv(t.recv, t.recv_count, MPI_FLOAT, prev, tag, comm, &reqs[1]);
    if (rc != MPI_SUCCESS) return rc;
    return MPI_Isend(t.send, t.send_count, MPI_FLOAT, next, tag, comm, &reqs[0]);
  }
  // Completes the current stage's reduction; posts the next stage, or nullopt after the last.
  std::optional<int> advance(MPI_Request* reqs) {
    const RingTransfer& t = stages[stage];
    if (t.sum_into)
      for (int i = 0; i < t.recv_count; ++i)
        t.sum_into[i] = (t.sum_into[i] + t.sum_from[i]) * t.scale;
    if (++stage == stages.size()) return std::nullopt;
    return post(reqs);
  }
};

class MpiRuntime {
 public:
  explicit MpiRuntime(const MpiOptions& opt) : opt_(opt), compute_threads_(omp_get_max_threads()) {
    TS_CHECK(opt_.timeout_s > 0, "mpi: timeout_s {} must be > 0", opt_.timeout_s);
    heartbeat_s_ = opt_.heartbeat_s > 0 ? opt_.heartbeat_s : std::min(1.0, opt_.timeout_s / 5);
    thread_ = std::thread([this] { thread_main(); });
    std::unique_lock<std::mutex> lock(mu_);
    ready_cv_.wait(lock, [&] { return ready_; });
    if (!init_error_.empty()) {
      lock.unlock();
      thread_.join();
      throw Error(init_error_);
    }
  }
  ~MpiRuntime() { shutdown(); }

  int rank() const { return rank_; }
  int size() const { return size_; }
  int64_t ring_min_bytes() const { return opt_.ring_min_bytes; }
  const std::string& description() const { return description_; }
  bool running() const { return thread_.joinable(); }

  WorkHandle submit(std::string what, std::function<int(MPI_Request*)> start,
                    std::function<void()> finish = {}) {
    auto op = std::make_unique<Op>();
    op->work = std::make_shared<MpiWork>(std::move(what), waiters_);
    op->start = std::move(start);
    op->finish = std::move(finish);
    return enqueue(std::move(op));
  }

  // A ring collective: its stages run one after another, then `finish`.
  WorkHandle submit_ring(std::string what, std::shared_ptr<RingRun> run,
                         std::function<void()> finish = {}) {
    auto op = std::make_unique<Op>();
    op->work = std::make_shared<MpiWork>(std::move(what), waiters_);
    op->start = [run](MPI_Request* reqs) { return run->begin(reqs); };
    op->next_stage = [run](MPI_Request* reqs) { return run->advance(reqs); };
    op->finish = std::move(finish);
    return enqueue(std::move(op));
  }

  // A send or recv: like submit, with the point-to-point checks of Op (recv_count, stall).
  WorkHandle submit_p2p(std::string what, int peer, std::function<int(MPI_Request*)> start,
                        int64_t recv_count) {
    auto op = std::make_unique<Op>();
    op->peer = peer;
    op->work = std::make_shared<MpiWork>(std::move(what), waiters_);
    op->start = std::move(start);
    op->recv_count = recv_count;
    op->stall_timeout_s = opt_.p2p_timeout_s;
    op->p2p = true;
    return enqueue(std::move(op));
  }

  // Runs f on the communication thread (for blocking MPI calls such as MPI_Comm_split) and
  // returns when it has run; its exception, if any, is rethrown here.
  void run_sync(std::function<void()> f) {
    std::packaged_task<void()> task(std::move(f));
    std::future<void> done = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      TS_CHECK(!stop_, "mpi: call after shutdown");
      tasks_.push_back(std::move(task));
    }
    cv_.notify_all();
    done.get();
  }

  void shutdown() {
    if (!thread_.joinable()) return;
    // A barrier first, with heartbeats still running: no rank may stop beating (or finalize)
    // while another still waits on it.
    try {
      submit(
          "final barrier", [](MPI_Request* r) { return MPI_Ibarrier(MPI_COMM_WORLD, r); },
          [this] { watching_ = false; })
          ->wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tessera: mpi: final barrier failed: %s\n", e.what());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void abort(int code) {
    // MPI_Abort from the thread that owns MPI; if that thread is wedged, leave anyway.
    {
      std::lock_guard<std::mutex> lock(mu_);
      abort_code_ = code;
    }
    cv_.notify_all();
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::_Exit(code);
  }

 private:
  WorkHandle enqueue(std::unique_ptr<Op> op) {
    WorkHandle handle = op->work;
    op->kind = op_kind_of(op->work->what());
    op->index = submitted_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      TS_CHECK(!stop_, "mpi: '{}' submitted after shutdown", op->work->what());
      queue_.push_back(std::move(op));
    }
    cv_.notify_all();
    return handle;
  }

  void thread_main() {
    if (!init_on_thread()) return;
    loop();
    finalize_on_thread();
  }

  bool init_on_thread() {
    auto fail_init = [&](std::string msg) {
      std::lock_guard<std::mutex> lock(mu_);
      init_error_ = std::move(msg);
      ready_ = true;
      ready_cv_.notify_all();
      return false;
    };
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return fail_init("mpi: MPI was already initialized outside Tessera");
    int provided = MPI_THREAD_SINGLE;
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return fail_init("mpi: MPI_Init_thread failed: " + mpi_error_string(rc));
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      return fail_init(fmt::format(
          "mpi: the MPI library provides thread level {}, Tessera needs FUNNELED (one thread "
          "makes all MPI calls)",
          thread_level_name(provided)));
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm_dup(MPI_COMM_WORLD, &hb_comm_);
    MPI_Comm_set_errhandler(hb_comm_, MPI_ERRORS_RETURN);
    decide_overlap();
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    std::string version(lib, size_t(len));
    if (auto cut = version.find_first_of(",\n"); cut != std::string::npos) version.resize(cut);
    description_ = fmt::format(
        "mpi ({}; {} ranks; thread level {}; progress thread; collectives progress while "
        "computing: {} ({}); heartbeat {:.2f} s, timeout {} s)",
        version, size_, thread_level_name(provided), overlap_ ? "yes" : "no", overlap_reason_,
        heartbeat_s_, opt_.timeout_s);
    const double now = monotonic_seconds();
    last_seen_.assign(size_t(size_), now);
    peer_submitted_at_.assign(size_t(size_), now);
    Beat none;
    none.submitted = -1;  // no beat yet: the first one counts as a change
    peer_beat_.assign(size_t(size_), none);
    own_submitted_at_ = now;
    progressed_at_ = now;
    next_beat_ = now;
    post_heartbeat_recv();
    std::lock_guard<std::mutex> lock(mu_);
    ready_ = true;
    ready_cv_.notify_all();
    return true;
  }

  // Progressing a collective while the training thread computes takes a core: worth it when
  // this rank has one to spare, a loss when the node's cores are all computing (each sweep then
  // preempts the computation, and the peers' threads are rarely scheduled at the same moment, so
  // the transfer crawls: bench_collectives --busy). Without a spare core, collectives move only
  // while some caller waits, at full speed.
  void decide_overlap() {
    // Collective over the world: every rank splits, whatever its options say (ranks whose
    // configs differ must reach the consistency check, not hang here).
    MPI_Comm node = MPI_COMM_NULL;
    int local_ranks = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
      MPI_Comm_size(node, &local_ranks);
      MPI_Comm_free(&node);
    }
    if (opt_.overlap != MpiOptions::Overlap::automatic) {
      overlap_ = opt_.overlap == MpiOptions::Overlap::on;
      overlap_reason_ = "MpiOptions::overlap";
      return;
    }
    const int cores = cores_per_rank(local_ranks);
    overlap_ = has_spare_core(local_ranks, compute_threads_);
    overlap_reason_ =
        fmt::format("{} core{} for this rank's {} compute thread{}", cores, cores == 1 ? "" : "s",
                    compute_threads_, compute_threads_ == 1 ? "" : "s");
  }

  bool p2p_in_flight() const {
    for (const auto& op : active_)
      if (op->p2p) return true;
    return false;
  }

  void loop() {
    const auto idle_wait = std::chrono::duration<double>(std::min(0.05, heartbeat_s_ / 4));
    for (;;) {
      std::deque<std::unique_ptr<Op>> fresh;
      std::deque<std::packaged_task<void()>> tasks;
      bool stopping;
      int abort_code;
      {
        std::lock_guard<std::mutex> lock(mu_);
        fresh.swap(queue_);
        tasks.swap(tasks_);
        stopping = stop_;
        abort_code = abort_code_;
      }
      if (abort_code >= 0) MPI_Abort(MPI_COMM_WORLD, abort_code);
      for (auto& op : fresh) start(std::move(op));
      for (auto& t : tasks) t();
      progress();
      heartbeat();
      if (stopping) abandon_stalled();
      if (stopping && active_.empty()) return;
      if (active_.empty()) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, idle_wait, [&] {
          return !queue_.empty() || !tasks_.empty() || stop_ || abort_code_ >= 0;
        });
      } else if (waiters_.any()) {
        std::this_thread::yield();
      } else if (overlap_ || p2p_in_flight()) {
        std::this_thread::sleep_for(kPollInterval);
      } else {
        // Collectives wait for a caller to wait: on a node with no core to spare they would
        // only take cycles from the computation (docs/DISTRIBUTED.md).
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, idle_wait, [&] {
          return waiters_.any() || !queue_.empty() || !tasks_.empty() || stop_ || abort_code_ >= 0;
        });
      }
    }
  }

  void start(std::unique_ptr<Op> op) {
    const int rc = op->start(op->reqs);
    if (rc != MPI_SUCCESS) fail(*op, rc);
    active_.push_back(std::move(op));
  }

  void fail(Op& op, int rc) {
    op.failed_at = monotonic_seconds();
    op.error = fmt::format("mpi: {} failed: {}", op.work->what(), mpi_error_string(rc));
    op.reqs[0] = op.reqs[1] = MPI_REQUEST_NULL;
  }

  void progress() {
    const double now = monotonic_seconds();
    for (size_t i = 0; i < active_.size();) {
      if (progress_one(*active_[i], now)) {
        active_.erase(active_.begin() + std::ptrdiff_t(i));
      } else {
        ++i;
      }
    }
  }

  // Tests one operation; true once it is finished (its waiter woken, MPI done with it).
  bool progress_one(Op& op, double now) {
    if (op.failed_at > 0) {
      // A failed call most likely means a peer died; give the heartbeat the chance to name it
      // before reporting the bare MPI error.
      if (now - op.failed_at <= opt_.timeout_s) return false;
      op.start = nullptr, op.next_stage = nullptr, op.finish = nullptr;
      if (!op.stalled) op.work->complete(op.error);  // a stalled one's waiter was told already
      return true;
    }
    int flag = 0;
    const int rc = op.reqs[1] == MPI_REQUEST_NULL
                       ? MPI_Test(&op.reqs[0], &flag, &op.status)
                       : MPI_Testall(2, op.reqs, &flag, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      // A recv shorter than its message: no peer died, so report it now.
      if (op.recv_count >= 0 && error_class(rc) == MPI_ERR_TRUNCATE && !op.stalled) {
        finish_op(op, fmt::format("mpi: {}: the message holds more than {} elements (the send "
                                  "and the recv differ in size)",
                                  op.work->what(), op.recv_count));
        return true;
      }
      fail(op, rc);
      return false;
    }
    if (!flag) {
      check_stall(op, now);
      return false;
    }
    progressed_at_ = now;  // a request completed: a stage of a ring, or the whole operation
    if (op.stalled) {      // its waiter was told long ago; MPI is done with it now
      op.start = nullptr, op.next_stage = nullptr, op.finish = nullptr;
      return true;
    }
    if (op.next_stage) {
      if (const std::optional<int> next = op.next_stage(op.reqs)) {
        if (*next != MPI_SUCCESS) fail(op, *next);
        return false;
      }
    }
    std::string error = received_size_problem(op);
    try {
      if (error.empty() && op.finish) op.finish();
    } catch (const std::exception& e) {
      error = e.what();
    }
    finish_op(op, std::move(error));
    return true;
  }

  // Drops the tensors the closures hold before the waiter wakes: once wait() returns, this
  // thread no longer keeps any of the operation's memory alive.
  static void finish_op(Op& op, std::string error) {
    op.start = nullptr, op.next_stage = nullptr, op.finish = nullptr;
    op.work->complete(std::move(error));
  }

  static int error_class(int rc) {
    int cls = rc;
    MPI_Error_class(rc, &cls);
    return cls;
  }

  // A recv that got fewer elements than its tensor holds; "" when the sizes agree.
  static std::string received_size_problem(const Op& op) {
    if (op.recv_count < 0) return "";
    int got = 0;
    MPI_Get_count(&op.status, MPI_FLOAT, &got);
    if (got == op.recv_count) return "";
    return fmt::format("mpi: {}: the message holds {} elements (the send and the recv differ)",
                       op.work->what(), got);
  }

  // A transfer whose peer is alive (heartbeats arrive) but never posts the matching call would
  // wait forever: after stall_timeout_s its waiter gets an Error naming the call and the peer.
  void check_stall(Op& op, double now) {
    if (op.stall_timeout_s <= 0 || op.stalled || now - op.work->start_time() <= op.stall_timeout_s)
      return;
    op.stalled = true;
    const bool recv = op.recv_count >= 0;
    if (recv) MPI_Cancel(&op.reqs[0]);  // completes the request (cancelled) at a later MPI_Test
    op.work->complete(fmt::format(
        "mpi: {} not complete after {} s (MpiOptions::p2p_timeout_s): the peer is alive (its "
        "heartbeats arrive) but has not posted the matching {}",
        op.work->what(), op.stall_timeout_s, recv ? "send" : "recv"));
  }

  // At shutdown: sends that stalled may never complete. Their requests are freed (MPI finishes
  // or drops them) and their operations deliberately leaked, tensors included, since MPI may
  // still read those buffers until MPI_Finalize.
  void abandon_stalled() {
    std::erase_if(active_, [](std::unique_ptr<Op>& op) {
      if (!op->stalled) return false;
      if (op->reqs[0] != MPI_REQUEST_NULL) MPI_Request_free(&op->reqs[0]);
      (void)op.release();
      return true;
    });
  }

  void post_heartbeat_recv() {
    MPI_Irecv(hb_in_.data(), int(hb_in_.size()), MPI_LONG_LONG, MPI_ANY_SOURCE, kTagHeartbeat,
              hb_comm_, &hb_recv_);
  }

  void heartbeat() {
    if (size_ == 1) return;
    const double now = monotonic_seconds();
    // Drain what arrived.
    for (;;) {
      int flag = 0;
      MPI_Status status;
      if (MPI_Test(&hb_recv_, &flag, &status) != MPI_SUCCESS || !flag) break;
      if (status.MPI_SOURCE >= 0 && status.MPI_SOURCE < size_) {
        const size_t p = size_t(status.MPI_SOURCE);
        last_seen_[p] = now;
        const Beat beat = Beat::decode(hb_in_);
        if (beat.submitted != peer_beat_[p].submitted) peer_submitted_at_[p] = now;
        peer_beat_[p] = beat;
      }
      post_heartbeat_recv();
    }
    // Retire completed sends (eager one-int messages complete at once).
    for (size_t i = 0; i < hb_sends_.size();) {
      int flag = 0;
      MPI_Test(&hb_sends_[i], &flag, MPI_STATUS_IGNORE);
      if (flag) {
        hb_sends_[i] = hb_sends_.back();
        hb_sends_.pop_back();
      } else {
        ++i;
      }
    }
    if (now >= next_beat_) {
      next_beat_ = now + heartbeat_s_;
      // The beat (beat.h): how many operations this rank's callers have submitted, whether one
      // of them waits on communication right now, and the oldest unfinished one. Its buffer
      // changes only once every earlier beat's send is complete (they are, at once, but for a
      // dead peer's).
      if (hb_sends_.empty()) hb_out_ = own_beat().encode();
      // A dead peer's sends may never complete; stop piling them up.
      if (hb_sends_.size() < size_t(64 * size_)) {
        for (int p = 0; p < size_; ++p) {
          if (p == rank_) continue;
          MPI_Request r;
          if (MPI_Isend(hb_out_.data(), int(hb_out_.size()), MPI_LONG_LONG, p, kTagHeartbeat,
                        hb_comm_, &r) == MPI_SUCCESS)
            hb_sends_.push_back(r);
        }
      }
    }
    if (!watching_) return;
    for (int p = 0; p < size_; ++p) {
      const double silent = now - last_seen_[size_t(p)];
      if (p != rank_ && silent > opt_.timeout_s) peer_lost(p, silent);
    }
    if (const long long n = submitted_.load(std::memory_order_relaxed); n != own_submitted_)
      own_submitted_ = n, own_submitted_at_ = now;
    check_stuck_peers(now);
    check_deadlock(now);
  }

  // This rank's oldest operation in flight (not stalled or failed), or null.
  const Op* oldest_active() const {
    const Op* oldest = nullptr;
    for (const auto& op : active_)
      if (!op->stalled && op->failed_at == 0 && (!oldest || op->index < oldest->index))
        oldest = op.get();
    return oldest;
  }

  Beat own_beat() const {
    Beat b;
    b.submitted = submitted_.load(std::memory_order_relaxed);
    b.waiting = waiters_.any();
    if (const Op* op = oldest_active()) {
      b.oldest_index = op->index;
      b.oldest_kind = op->kind;
      b.oldest_peer = op->peer;
    }
    return b;
  }

  // Every rank waiting on communication and none submitting anything for stuck_timeout_s: they
  // wait on each other (collectives called in different orders, a recv whose send never comes),
  // and every heartbeat is on time, so nothing else would end the job. Names what each waits in.
  void check_deadlock(double now) {
    const double limit = opt_.stuck_timeout_s;
    // A collective still moving (a slow ring over a slow link) is not a deadlock.
    if (limit <= 0 || !waiters_.any() || now - own_submitted_at_ <= limit ||
        now - progressed_at_ <= limit)
      return;
    const Op* oldest = oldest_active();
    if (!oldest || now - oldest->work->start_time() <= limit) return;
    for (int p = 0; p < size_; ++p)
      if (p != rank_ && (!peer_beat_[size_t(p)].waiting || peer_beat_[size_t(p)].submitted < 0 ||
                         now - peer_submitted_at_[size_t(p)] <= limit))
        return;
    std::string each;
    for (int p = 0; p < size_; ++p)
      each += fmt::format("{}rank {}: {}", p == 0 ? "" : "; ", p,
                          p == rank_ ? fmt::format("#{} {}", oldest->index, oldest->work->what())
                                     : peer_beat_[size_t(p)].oldest());
    std::fprintf(stderr,
                 "tessera: rank %d: deadlock: every rank has waited on communication for over "
                 "%.1f s and none has started any (parallel.stuck_timeout_s = %g): the ranks wait "
                 "on each other (collectives called in different orders, or a recv whose send "
                 "never comes). Oldest unfinished operation of each (index in that rank's "
                 "order): %s. Exiting.\n",
                 rank_, now - oldest->work->start_time(), limit, each.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(kPeerLostExitCode);
  }

  // A peer alive (its heartbeats arrive), not waiting on communication itself, whose callers
  // have submitted nothing for stuck_timeout_s while one of ours has waited that long on an
  // operation: its training thread is stuck outside communication (a deadlock, an endless
  // loop, work longer than the timeout), and without this the job would hang with every
  // heartbeat on time.
  void check_stuck_peers(double now) {
    if (opt_.stuck_timeout_s <= 0 || !waiters_.any()) return;
    const Op* oldest = nullptr;
    for (const auto& op : active_)
      if (!op->stalled && op->failed_at == 0 &&
          (!oldest || op->work->start_time() < oldest->work->start_time()))
        oldest = op.get();
    if (!oldest || now - oldest->work->start_time() <= opt_.stuck_timeout_s) return;
    for (int p = 0; p < size_; ++p) {
      const double idle = now - peer_submitted_at_[size_t(p)];
      // A peer waiting too is not stuck outside communication (it waits on someone else).
      if (p != rank_ && !peer_beat_[size_t(p)].waiting && idle > opt_.stuck_timeout_s)
        peer_stuck(p, idle, oldest->work->what(), now - oldest->work->start_time());
    }
  }

  [[noreturn]] void peer_stuck(int peer, double idle, const std::string& what, double waited) {
    std::fprintf(stderr,
                 "tessera: rank %d: rank %d is alive (its heartbeats arrive) but has started no "
                 "communication for %.1f s, while this rank has waited %.1f s in %s "
                 "(parallel.stuck_timeout_s = %g): its training thread is stuck (a deadlock, an "
                 "endless loop, or work longer than the timeout). Exiting.\n",
                 rank_, peer, idle, waited, what.c_str(), opt_.stuck_timeout_s);
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(kPeerLostExitCode);
  }

  [[noreturn]] void peer_lost(int peer, double silent) {
    std::fprintf(
        stderr,
        "tessera: rank %d: rank %d stopped responding: no heartbeat for %.1f s "
        "(parallel.timeout_s = %g); it died, is suspended or its node is unreachable. Exiting.\n",
        rank_, peer, silent, opt_.timeout_s);
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(kPeerLostExitCode);
  }

  void finalize_on_thread() {
    MPI_Cancel(&hb_recv_);
    MPI_Wait(&hb_recv_, MPI_STATUS_IGNORE);
    const double deadline = monotonic_seconds() + 1.0;
    while (!hb_sends_.empty() && monotonic_seconds() < deadline) {
      int flag = 0;
      MPI_Testall(int(hb_sends_.size()), hb_sends_.data(), &flag, MPI_STATUSES_IGNORE);
      if (flag) hb_sends_.clear();
    }
    for (MPI_Request& r : hb_sends_) MPI_Request_free(&r);
    MPI_Comm_free(&hb_comm_);
    MPI_Finalize();
  }

  MpiOptions opt_;
  double heartbeat_s_ = 1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_, ready_cv_;
  std::deque<std::unique_ptr<Op>> queue_;
  std::deque<std::packaged_task<void()>> tasks_;
  bool ready_ = false, stop_ = false;
  int abort_code_ = -1;
  std::string init_error_;
  Waiters waiters_{0, mu_, cv_};
  std::atomic<long long> submitted_{0};  // operations the callers have queued
  int compute_threads_ = 1;              // the OpenMP threads of the thread that started MPI

  // Communication thread only.
  std::vector<std::unique_ptr<Op>> active_;
  // Whether collectives progress while every caller computes (decide_overlap(); point-to-point
  // transfers always do).
  bool overlap_ = true;
  std::string overlap_reason_;
  int rank_ = 0, size_ = 1;
  std::string description_;
  MPI_Comm hb_comm_ = MPI_COMM_NULL;
  MPI_Request hb_recv_ = MPI_REQUEST_NULL;
  Beat::Wire hb_in_{}, hb_out_{};
  std::vector<MPI_Request> hb_sends_;
  std::vector<double> last_seen_;
  // Per peer: its last beat (submitted = -1 before the first), and when the submitted count it
  // carries last changed.
  std::vector<Beat> peer_beat_;
  std::vector<double> peer_submitted_at_;
  long long own_submitted_ = 0;
  double own_submitted_at_ = 0;  // when this rank's callers last submitted an operation
  double progressed_at_ = 0;     // when one of this rank's requests last completed
  double next_beat_ = 0;
  bool watching_ = true;
};

std::mutex g_runtime_mu;
std::unique_ptr<MpiRuntime> g_runtime;
std::shared_ptr<Communicator> g_world;

// Finalizes MPI at exit when the program did not call mpi_shutdown().
struct ShutdownAtExit {
  ~ShutdownAtExit() { mpi_shutdown(); }
} g_shutdown_at_exit;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MpiRuntime& rt, MPI_Comm comm) : rt_(rt), comm_(comm) {
    rt_.run_sync([&] {
      MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
      MPI_Comm_rank(comm_, &rank_);
      MPI_Comm_size(comm_, &size_);
      // The world rank of each of this communicator's ranks: the heartbeat and the reports name
      // world ranks, so a send's or recv's peer on a split communicator is translated.
      std::vector<int> mine(size_t(size_), 0);
      for (int r = 0; r < size_; ++r) mine[size_t(r)] = r;
      world_rank_of_.assign(size_t(size_), 0);
      MPI_Group group, world;
      MPI_Comm_group(comm_, &group);
      MPI_Comm_group(MPI_COMM_WORLD, &world);
      MPI_Group_translate_ranks(group, size_, mine.data(), world, world_rank_of_.data());
      MPI_Group_free(&group);
      MPI_Group_free(&world);
    });
  }
  ~MpiCommunicator() override {
    if (comm_ == MPI_COMM_WORLD || !rt_.running()) return;
    try {
      rt_.run_sync([c = comm_]() mutable { MPI_Comm_free(&c); });
    } catch (const std::exception&) {
    }
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  std::string describe() const override { return rt_.description(); }

  WorkHandle all_reduce_async(Tensor t, ReduceOp op) override {
    check_collective_tensor("all_reduce: t", t);
    const int n = to_int_count("all_reduce", t.numel());
    const float scale = op == ReduceOp::average ? 1.f / float(size_) : 1.f;
    if (use_ring(t.numel())) {
      auto run = all_reduce_ring(t.data<float>(), n, scale);
      return rt_.submit_ring("all_reduce", run, [t] {});  // the closure keeps t alive
    }
    MPI_Comm c = comm_;
    return rt_.submit(
        "all_reduce",
        [t, n, c](MPI_Request* r) {
          return MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), n, MPI_FLOAT, MPI_SUM, c, r);
        },
        [t, n, scale] {
          if (scale == 1.f) return;
          float* p = t.data<float>();
          for (int i = 0; i < n; ++i) p[i] *= scale;
        });
  }

  WorkHandle reduce_scatter_async(Tensor in, Tensor out, std::vector<int64_t> counts,
                                  ReduceOp op) override {
    check_collective_tensor("reduce_scatter: in", in);
    check_collective_tensor("reduce_scatter: out", out);
    auto icounts = std::make_shared<std::vector<int>>(check_counts("reduce_scatter", counts));
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    TS_CHECK(in.numel() == total, "reduce_scatter: in {} holds {} elements, the counts sum to {}",
             in.desc(), in.numel(), total);
    TS_CHECK(out.numel() == counts[size_t(rank_)],
             "reduce_scatter: out {} on rank {}: expected counts[{}] = {} elements", out.desc(),
             rank_, rank_, counts[size_t(rank_)]);
    const float scale = op == ReduceOp::average ? 1.f / float(size_) : 1.f;
    if (use_ring(in.numel())) {
      auto run = reduce_scatter_ring(in.data<float>(), out.data<float>(), counts, scale);
      return rt_.submit_ring("reduce_scatter", run, [in, out] {});  // keeps in and out alive
    }
    MPI_Comm c = comm_;
    const int n_out = int(out.numel());
    return rt_.submit(
        "reduce_scatter",
        [in, out, icounts, c](MPI_Request* r) {
          return MPI_Ireduce_scatter(in.raw_data(), out.raw_data(), icounts->data(), MPI_FLOAT,
                                     MPI_SUM, c, r);
        },
        [out, n_out, scale] {
          if (scale == 1.f) return;
          float* p = out.data<float>();
          for (int i = 0; i < n_out; ++i) p[i] *= scale;
        });
  }

  WorkHandle all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) override {
    check_collective_tensor("all_gather: in", in);
    check_collective_tensor("all_gather: out", out);
    auto icounts = std::make_shared<std::vector<int>>(check_counts("all_gather", counts));
    auto displs = std::make_shared<std::vector<int>>(icounts->size());
    int64_t total = 0;
    for (size_t r = 0; r < counts.size(); ++r) {
      (*displs)[r] = to_int_count("all_gather", total);
      total += counts[r];
    }
    TS_CHECK(out.numel() == total, "all_gather: out {} holds {} elements, the counts sum to {}",
             out.desc(), out.numel(), total);
    TS_CHECK(in.numel() == counts[size_t(rank_)],
             "all_gather: in {} on rank {}: expected counts[{}] = {} elements", in.desc(), rank_,
             rank_, counts[size_t(rank_)]);
    // In place when `in` is already this rank's slot of `out`.
    const bool in_place =
        static_cast<char*>(in.raw_data()) ==
        static_cast<char*>(out.raw_data()) + size_t((*displs)[size_t(rank_)]) * sizeof(float);
    if (use_ring(out.numel())) {
      auto run = new_ring_run();
      run->copy_from = in.data<float>();
      run->copy_to = out.data<float>() + (*displs)[size_t(rank_)];
      run->copy_count = in.numel();
      append_all_gather_stages(*run, out.data<float>(), *icounts, *displs);
      return rt_.submit_ring("all_gather", run, [in, out] {});  // keeps in and out alive
    }
    MPI_Comm c = comm_;
    const int me = rank_;
    return rt_.submit("all_gather", [in, out, icounts, displs, c, in_place, me](MPI_Request* r) {
      return MPI_Iallgatherv(in_place ? MPI_IN_PLACE : in.raw_data(), (*icounts)[size_t(me)],
                             MPI_FLOAT, out.raw_data(), icounts->data(), displs->data(), MPI_FLOAT,
                             c, r);
    });
  }

  WorkHandle broadcast_async(Tensor t, int root) override {
    check_collective_tensor("broadcast: t", t);
    TS_CHECK(root >= 0 && root < size_, "broadcast: root {} out of range for {} ranks", root,
             size_);
    const int n = to_int_count("broadcast", t.numel());
    MPI_Comm c = comm_;
    return rt_.submit("broadcast", [t, n, root, c](MPI_Request* r) {
      return MPI_Ibcast(t.raw_data(), n, MPI_FLOAT, root, c, r);
    });
  }

  WorkHandle send_async(Tensor t, int peer) override {
    check_p2p("send", t, peer, rank_, size_);
    const int n = to_int_count("send", t.numel());
    MPI_Comm c = comm_;
    return rt_.submit_p2p(
        fmt::format("send of {} to rank {} (rank {})", t.desc(), world_rank_of_[size_t(peer)],
                    world_rank_of_[size_t(rank_)]),
        world_rank_of_[size_t(peer)],
        [t, n, peer, c](MPI_Request* r) {
          return MPI_Isend(t.raw_data(), n, MPI_FLOAT, peer, kTagP2P, c, r);
        },
        /*recv_count=*/-1);
  }

  WorkHandle recv_async(Tensor t, int peer) override {
    check_p2p("recv", t, peer, rank_, size_);
    const int n = to_int_count("recv", t.numel());
    MPI_Comm c = comm_;
    return rt_.submit_p2p(
        fmt::format("recv of {} from rank {} (rank {})", t.desc(), world_rank_of_[size_t(peer)],
                    world_rank_of_[size_t(rank_)]),
        world_rank_of_[size_t(peer)],
        [t, n, peer, c](MPI_Request* r) {
          return MPI_Irecv(t.raw_data(), n, MPI_FLOAT, peer, kTagP2P, c, r);
        },
        /*recv_count=*/n);
  }

  WorkHandle barrier_async() override {
    MPI_Comm c = comm_;
    return rt_.submit("barrier", [c](MPI_Request* r) { return MPI_Ibarrier(c, r); });
  }

  std::vector<std::string> all_gather_bytes(const std::string& mine) override {
    auto sizes = std::make_shared<std::vector<int>>(static_cast<size_t>(size_));
    auto my_size = std::make_shared<int>(to_int_count("all_gather_bytes", int64_t(mine.size())));
    MPI_Comm c = comm_;
    rt_.submit("all_gather_bytes (sizes)",
               [sizes, my_size, c](MPI_Request* r) {
                 return MPI_Iallgather(my_size.get(), 1, MPI_INT, sizes->data(), 1, MPI_INT, c, r);
               })
        ->wait();
    auto displs = std::make_shared<std::vector<int>>(static_cast<size_t>(size_));
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      (*displs)[size_t(r)] = to_int_count("all_gather_bytes", total);
      total += (*sizes)[size_t(r)];
    }
    auto buf = std::make_shared<std::string>(size_t(total), '\0');
    auto send = std::make_shared<std::string>(mine);
    rt_.submit("all_gather_bytes",
               [buf, send, sizes, displs, c](MPI_Request* r) {
                 return MPI_Iallgatherv(send->data(), int(send->size()), MPI_CHAR, buf->data(),
                                        sizes->data(), displs->data(), MPI_CHAR, c, r);
               })
        ->wait();
    std::vector<std::string> out(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r)
      out[size_t(r)] = buf->substr(size_t((*displs)[size_t(r)]), size_t((*sizes)[size_t(r)]));
    return out;
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    // All members arrive first (heartbeats keep running while they wait), so the blocking
    // MPI_Comm_split below returns at once and never silences this rank's heartbeat for long.
    barrier();
    MPI_Comm sub = MPI_COMM_NULL;
    int rc = MPI_SUCCESS;
    rt_.run_sync([&] { rc = MPI_Comm_split(comm_, color, key, &sub); });
    TS_CHECK(rc == MPI_SUCCESS, "mpi: split({}, {}) failed: {}", color, key, mpi_error_string(rc));
    return std::make_unique<MpiCommunicator>(rt_, sub);
  }

 private:
  // Large all-reduces, reduce-scatters and all-gathers run as Tessera's ring
  // (dist/ring_schedule.h) over point-to-point transfers: Open MPI's non-blocking ones allocate
  // scratch the size of the whole buffer on every call and its reduce-scatter moves more than the
  // ring's (n-1)/n of it (docs/PERF.md, "Collectives"); small ones keep MPI's latency-optimal
  // algorithms.
  bool use_ring(int64_t elements) const {
    return size_ > 1 && elements * int64_t(sizeof(float)) >= rt_.ring_min_bytes();
  }

  std::shared_ptr<RingRun> new_ring_run() {
    auto run = std::make_shared<RingRun>();
    run->comm = comm_;
    run->tag = kTagRingFirst + int(ring_sequence_++ % kRingTags);
    run->next = ring_next(rank_, size_);
    run->prev = ring_prev(rank_, size_);
    return run;
  }

  // In place: the reduce-scatter stages leave segment `rank_` summed (and scaled) in `data`, the
  // all-gather stages pass the summed segments around the ring.
  std::shared_ptr<RingRun> all_reduce_ring(float* data, int n, float scale) {
    std::vector<int> count(static_cast<size_t>(size_)), displ(static_cast<size_t>(size_));
    for (int i = 0, at = 0; i < size_; ++i) {
      count[size_t(i)] = n / size_ + (i < n % size_ ? 1 : 0);
      displ[size_t(i)] = at;
      at += count[size_t(i)];
    }
    auto run = new_ring_run();
    run->scratch[0] = Tensor::empty(Shape{count[0]});
    float* tmp = run->scratch[0].data<float>();
    const auto reduce = ring_reduce_scatter_steps(rank_, size_);
    for (size_t k = 0; k < reduce.size(); ++k) {
      const auto [to, from] = reduce[k];
      run->stages.push_back({data + displ[size_t(to)], count[size_t(to)], tmp, count[size_t(from)],
                             data + displ[size_t(from)], tmp,
                             k + 1 == reduce.size() ? scale : 1.f});
    }
    append_all_gather_stages(*run, data, count, displ);
    return run;
  }

  // The all-gather stages over `data`, segment i being count[i] elements at displ[i].
  void append_all_gather_stages(RingRun& run, float* data, const std::vector<int>& count,
                                const std::vector<int>& displ) const {
    for (const auto [to, from] : ring_all_gather_steps(rank_, size_))
      run.stages.push_back({data + displ[size_t(to)], count[size_t(to)], data + displ[size_t(from)],
                            count[size_t(from)]});
  }

  // `in` is left as it is: the partial sums travel in two scratch buffers used in turn (one is
  // being sent while the other receives), the last stage receives into `out`.
  std::shared_ptr<RingRun> reduce_scatter_ring(const float* in, float* out,
                                               const std::vector<int64_t>& counts, float scale) {
    std::vector<int64_t> displ(counts.size());
    int64_t widest = 0;
    for (size_t i = 0, at = 0; i < counts.size(); at += size_t(counts[i]), ++i) {
      displ[i] = int64_t(at);
      widest = std::max(widest, counts[i]);
    }
    auto run = new_ring_run();
    const auto steps = ring_reduce_scatter_steps(rank_, size_);
    if (steps.size() > 1)
      for (Tensor& buf : run->scratch) buf = Tensor::empty(Shape{widest});
    for (size_t k = 0; k < steps.size(); ++k) {
      const auto [to, from] = steps[k];
      const bool last = k + 1 == steps.size();
      float* recv = last ? out : run->scratch[k % 2].data<float>();
      const float* send = k == 0 ? in + displ[size_t(to)] : run->scratch[(k - 1) % 2].data<float>();
      run->stages.push_back({send, int(counts[size_t(to)]), recv, int(counts[size_t(from)]), recv,
                             in + displ[size_t(from)], last ? scale : 1.f});
    }
    return run;
  }

  std::vector<int> check_counts(const char* op, const std::vector<int64_t>& counts) const {
    TS_CHECK(counts.size() == size_t(size_), "{}: {} counts for a {}-rank communicator", op,
             counts.size(), size_);
    std::vector<int> out;
    for (int64_t c : counts) out.push_back(to_int_count(op, c));
    return out;
  }

  MpiRuntime& rt_;
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_rank_of_;          // by rank in comm_
  std::atomic<uint32_t> ring_sequence_{0};  // ring collectives started, for their tags
};

}  // namespace

bool mpi_built_in() {
  return true;
}

std::string mpi_feature_line() {
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(lib, &len);  // callable before MPI_Init
  std::string version(lib, size_t(len));
  if (auto cut = version.find_first_of(",\n"); cut != std::string::npos) version.resize(cut);
  return fmt::format("mpi: yes ({}, MPI {}.{}; launch with mpirun or srun)", version, MPI_VERSION,
                     MPI_SUBVERSION);
}

std::shared_ptr<Communicator> mpi_world(const MpiOptions& opt) {
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  if (!g_world) {
    g_runtime = std::make_unique<MpiRuntime>(opt);
    g_world = std::make_shared<MpiCommunicator>(*g_runtime, MPI_COMM_WORLD);
  }
  return g_world;
}

bool mpi_running() {
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  return g_runtime && g_runtime->running();
}

void mpi_shutdown() {
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  if (!g_runtime) return;
  g_runtime->shutdown();
}

void mpi_abort(int code) {
  MpiRuntime* rt = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_runtime_mu);
    rt = g_runtime.get();
  }
  if (rt && rt->running()) rt->abort(code);
}

}  // namespace tessera::dist

#else  // !TESSERA_HAVE_MPI

namespace tessera::dist {

bool mpi_built_in() {
  return false;
}

std::string mpi_feature_line() {
  return "mpi: no (this build has no MPI: install openmpi-bin libopenmpi-dev and rebuild with "
         "-DTESSERA_WITH_MPI=ON; only single-process training is available)";
}

std::shared_ptr<Communicator> mpi_world(const MpiOptions&) {
  fail(
      "distributed training needs the MPI backend, which is not built in: install openmpi-bin "
      "libopenmpi-dev and rebuild with -DTESSERA_WITH_MPI=ON");
}

bool mpi_running() {
  return false;
}
void mpi_shutdown() {}
void mpi_abort(int) {}

}  // namespace tessera::dist

#endif
