// The NCCL communicator (see nccl_comm.h for the design: streams, events, unequal counts,
// failures).
#include "dist/nccl_comm.h"

#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <thread>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "cuda/nccl.h"
#include "dist/clock.h"
#include "dist/mpi_comm.h"  // kPeerLostExitCode (the header builds without MPI)
#include "dist/nccl_id.h"

static_assert(NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0),
              "the NCCL backend needs NCCL >= 2.14 (ncclAvg, non-blocking communicators)");

namespace tessera::dist {

using cuda::current_stream;
using cuda::DeviceProbe;
using cuda::fail_cuda;
using cuda::nccl_version;
using cuda::nccl_version_string;
using cuda::probe_devices;

namespace {

double now() {
  return monotonic_seconds();
}

// One collective: its completion event, and the tensors it reads or writes, kept alive until the
// last of its handle and the communicator's in-flight list lets go (the list does so only once
// the event has fired).
struct NcclOp {
  NcclOp(std::string w, std::vector<Tensor> k)
      : what(std::move(w)), start(now()), keep(std::move(k)) {}
  ~NcclOp() {
    if (done_ev) (void)cudaEventDestroy(done_ev);  // legal while pending: freed once it fires
  }
  NcclOp(const NcclOp&) = delete;
  NcclOp& operator=(const NcclOp&) = delete;

  // True once the event has fired; stamps the end time the first time it is seen.
  bool poll() {
    if (end.load() > 0) return true;
    const cudaError_t e = cudaEventQuery(done_ev);
    if (e == cudaErrorNotReady) return false;
    if (e != cudaSuccess) fail_cuda(e, "cudaEventQuery(nccl completion event)", __FILE__, __LINE__);
    double zero = 0;
    end.compare_exchange_strong(zero, now());
    return true;
  }

  std::string what;
  double start;
  std::vector<Tensor> keep;
  cudaEvent_t done_ev = nullptr;
  std::atomic<double> end{0};
};

class NcclWork final : public Work {
 public:
  explicit NcclWork(std::shared_ptr<NcclOp> op) : op_(std::move(op)) {}
  // Device-side: the caller's current stream waits for the collective (see nccl_comm.h).
  void wait() override { CUDA_CHECK(cudaStreamWaitEvent(current_stream(), op_->done_ev, 0)); }
  bool done() const override { return op_->poll(); }
  double start_time() const override { return op_->start; }
  double end_time() const override { return op_->end.load(); }
  NcclOp& op() const { return *op_; }

 private:
  std::shared_ptr<NcclOp> op_;
};

std::string nccl_result(ncclResult_t r) {
  return fmt::format("{} ({})", ncclGetErrorString(r), int(r));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  return op == ReduceOp::average ? ncclAvg : ncclSum;
}

ncclDataType_t nccl_type(DType t) {
  return t == DType::bf16 ? ncclBfloat16 : ncclFloat32;
}

}  // namespace

struct NcclCommunicator::Impl {
  std::shared_ptr<Communicator> bootstrap;
  NcclOptions opt;
  int device = 0, rank = 0, size = 1;
  std::string name;
  ncclComm_t comm = nullptr;  // guarded by mu once the watchdog runs; null after an abort
  cudaStream_t stream = nullptr;
  cudaEvent_t ready_ev = nullptr;  // re-recorded by every launch (waits capture it at once)
  float* barrier_buf = nullptr;

  std::mutex launch_mu;  // NCCL calls on one communicator must not overlap
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<NcclOp>> flight;
  bool stop = false;
  std::atomic<bool> failed{false};
  std::thread watchdog;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  // Teardown lives here so that a constructor failing half-way releases what it made.
  ~Impl() { teardown(); }

  // Drops completed collectives from the in-flight list; returns how many remain.
  size_t prune_locked() {
    std::erase_if(flight, [](const std::shared_ptr<NcclOp>& o) { return o->poll(); });
    return flight.size();
  }

  ncclComm_t live_comm(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu);
    TS_CHECK(comm && !failed, "nccl: {}: {} after an earlier failure of this communicator", name,
             what);
    return comm;
  }

  // Aborts the NCCL communicator (ends its kernels; no call on it may follow).
  void abort_locked() {
    failed = true;
    if (comm) (void)ncclCommAbort(comm);
    comm = nullptr;
  }

  // A non-blocking communicator answers ncclInProgress while work (initialisation, connection
  // set-up) is under way: poll its state until it settles, for at most timeout_s.
  void settle(ncclComm_t c, ncclResult_t r, const char* call) {
    const double deadline = now() + opt.timeout_s;
    while (r == ncclInProgress) {
      if (now() > deadline) {
        std::lock_guard<std::mutex> lock(mu);
        abort_locked();
        fail(
            "nccl: {}: {} did not complete within timeout_s = {} s (a peer that never joined?); "
            "the communicator is aborted",
            name, call, opt.timeout_s);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      const ncclResult_t q = ncclCommGetAsyncError(c, &r);
      if (q != ncclSuccess) r = q;
    }
    if (r == ncclSuccess) return;
    const std::string detail = ncclGetLastError(c);
    std::lock_guard<std::mutex> lock(mu);
    abort_locked();
    fail("nccl: {}: {} failed: {}{}{}; the communicator is aborted", name, call, nccl_result(r),
         detail.empty() ? "" : ": ", detail);
  }

  // Orders the communication stream after the caller's current stream, runs enqueue (the NCCL
  // calls, each settled), records the completion event, and tracks the collective until done.
  template <class F>
  WorkHandle launch(std::string what, std::vector<Tensor> keep, F&& enqueue) {
    std::lock_guard<std::mutex> launching(launch_mu);
    int cur = -1;
    CUDA_CHECK(cudaGetDevice(&cur));
    TS_CHECK(cur == device,
             "nccl: {}: {} called with cuda:{} current on this thread, but the communicator is on "
             "cuda:{} (call cuda::init({}) on this thread first)",
             name, what, cur, device, device);
    ncclComm_t c = live_comm(what);
    auto op = std::make_shared<NcclOp>(std::move(what), std::move(keep));
    CUDA_CHECK(cudaEventCreateWithFlags(&op->done_ev, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(ready_ev, current_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(stream, ready_ev, 0));
    enqueue(c);
    CUDA_CHECK(cudaEventRecord(op->done_ev, stream));
    {
      std::lock_guard<std::mutex> lock(mu);
      prune_locked();
      flight.push_back(op);
    }
    return std::make_shared<NcclWork>(op);
  }

  // The watchdog thread: completed collectives leave the in-flight list; one past timeout_s or
  // an asynchronous NCCL error marks the communicator failed and goes to opt.on_failure.
  void watch() {
    (void)cudaSetDevice(device);
    std::unique_lock<std::mutex> lock(mu);
    while (!stop) {
      cv.wait_for(lock, std::chrono::duration<double>(opt.poll_s));
      if (stop || failed) break;
      std::string problem;
      try {
        prune_locked();
      } catch (const std::exception& e) {
        problem = e.what();
      }
      const double t = now();
      for (const auto& o : flight)
        if (problem.empty() && t - o->start > opt.timeout_s)
          problem = fmt::format(
              "{} started {:.1f} s ago has not completed (timeout_s = {} s): a peer died, hangs, "
              "or never started the same collective (or the matching send or recv)",
              o->what, t - o->start, opt.timeout_s);
      if (problem.empty() && comm) {
        ncclResult_t st = ncclSuccess;
        if (ncclCommGetAsyncError(comm, &st) == ncclSuccess && st != ncclSuccess &&
            st != ncclInProgress)
          problem = fmt::format("asynchronous NCCL error {}: {}", nccl_result(st),
                                ncclGetLastError(comm));
      }
      if (problem.empty()) continue;
      // Later calls throw; the NCCL communicator itself is aborted at destruction (or dies with
      // the process): aborting it here could pull it from under a call on the training thread.
      failed = true;
      lock.unlock();
      opt.on_failure(fmt::format("tessera: nccl: {}: {}", name, problem));
      return;
    }
  }

  // Never throws: runs from destructors, possibly while an exception unwinds.
  void teardown() noexcept {
    // Let queued collectives finish (bounded; a stuck one is what the watchdog reports).
    const double deadline = now() + opt.timeout_s;
    bool drained = false;
    while (!failed && now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu);
        try {
          drained = prune_locked() == 0;
        } catch (const std::exception&) {
          break;  // a CUDA error: abort below
        }
      }
      if (drained) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
    if (comm && drained && !failed) {
      // Finalize flushes NCCL's internal work; poll it like any non-blocking call.
      ncclResult_t r = ncclCommFinalize(comm);
      const double until = now() + std::min(opt.timeout_s, 30.0);
      while (r == ncclInProgress && now() < until) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) break;
      }
      if (r == ncclSuccess) {
        (void)ncclCommDestroy(comm);
        comm = nullptr;
      }
    }
    if (comm) (void)ncclCommAbort(comm);
    comm = nullptr;
    flight.clear();
    if (stream) (void)cudaStreamSynchronize(stream);
    if (barrier_buf) (void)cudaFree(barrier_buf);
    if (ready_ev) (void)cudaEventDestroy(ready_ev);
    if (stream) (void)cudaStreamDestroy(stream);
    (void)cudaGetLastError();  // nothing of the teardown may poison the next CUDA_CHECK
  }
};

NcclCommunicator::NcclCommunicator(std::shared_ptr<Communicator> bootstrap, int device,
                                   NcclOptions opt)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  TS_CHECK(bootstrap, "nccl: the bootstrap communicator is null");
  TS_CHECK(opt.timeout_s > 0 && opt.poll_s > 0, "nccl: timeout_s {} and poll_s {} must be > 0",
           opt.timeout_s, opt.poll_s);
  if (!opt.on_failure)
    opt.on_failure = [](const std::string& msg) {
      std::fprintf(stderr, "%s; exiting with code %d\n", msg.c_str(), kPeerLostExitCode);
      std::fflush(stderr);
      std::_Exit(kPeerLostExitCode);
    };
  m.bootstrap = std::move(bootstrap);
  m.opt = std::move(opt);
  m.rank = m.bootstrap->rank();
  m.size = m.bootstrap->world_size();
  m.device = device;
  m.name = fmt::format("rank {} of {} on cuda:{}", m.rank, m.size, device);
  TS_CHECK(nccl_version() >= 21400, "nccl: the NCCL library is {}, the backend needs >= 2.14",
           nccl_version_string());
  // Every rank takes part in the id exchange before anything can fail locally, so that one
  // rank's missing device cannot leave the others waiting in it.
  const std::string id_bytes = exchange_unique_id(*m.bootstrap, new_nccl_unique_id);
  const DeviceProbe& p = probe_devices();
  TS_CHECK(p.count > 0, "nccl: {}: no CUDA device: {}", m.name, p.reason);
  TS_CHECK(device >= 0 && device < p.count, "nccl: {}: device {} out of range ({} devices)", m.name,
           device, p.count);
  cuda::init(device);

  ncclUniqueId id{};
  std::memcpy(id.internal, id_bytes.data(), sizeof id.internal);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t c = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&c, m.size, id, m.rank, &config);
  m.comm = c;
  if (!c) fail("nccl: {}: ncclCommInitRankConfig failed: {}", m.name, nccl_result(r));
  m.settle(c, r, "ncclCommInitRankConfig");

  int lo = 0, hi = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
  CUDA_CHECK(cudaStreamCreateWithPriority(&m.stream, cudaStreamNonBlocking, hi));
  CUDA_CHECK(cudaEventCreateWithFlags(&m.ready_ev, cudaEventDisableTiming));
  CUDA_CHECK(cudaMalloc(&m.barrier_buf, sizeof(float)));
  CUDA_CHECK(cudaMemset(m.barrier_buf, 0, sizeof(float)));  // sums of zeros: never inf or NaN
  m.watchdog = std::thread([&m] { m.watch(); });
}

NcclCommunicator::~NcclCommunicator() = default;  // Impl::~Impl tears down

namespace {

// The element offsets of counts' parts, and their total.
std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> off(counts.size() + 1, 0);
  for (size_t r = 0; r < counts.size(); ++r) off[r + 1] = off[r] + counts[r];
  return off;
}

bool overlaps(const Tensor& a, const Tensor& b) {
  const auto* pa = static_cast<const char*>(a.raw_data());
  const auto* pb = static_cast<const char*>(b.raw_data());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

}  // namespace

int NcclCommunicator::rank() const {
  return impl_->rank;
}
int NcclCommunicator::world_size() const {
  return impl_->size;
}
cudaStream_t NcclCommunicator::stream() const {
  return impl_->stream;
}
int NcclCommunicator::device() const {
  return impl_->device;
}

std::string NcclCommunicator::describe() const {
  return fmt::format("nccl: NCCL {}, {}, id over {}", nccl_version_string(), impl_->name,
                     impl_->bootstrap->backend());
}

size_t NcclCommunicator::in_flight() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->prune_locked();
}

namespace {

void check_tensor(const char* what, const Tensor& t, int device) {
  TS_CHECK(t.defined(), "nccl: {} is undefined", what);
  TS_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16,
           "nccl: {} is {}, expected f32 or bf16", what, t.desc());
  TS_CHECK(t.is_contiguous(), "nccl: {} ({}) is not contiguous", what, t.desc());
  TS_CHECK(t.device() == Device::cuda(device),
           "nccl: {} ({}) is on {}, expected cuda:{} (the communicator's device)", what, t.desc(),
           t.device().str(), device);
}

void check_counts(const char* op, const std::vector<int64_t>& counts, int size) {
  TS_CHECK(counts.size() == size_t(size),
           "nccl: {}: {} counts for a {}-rank communicator (counts must be the same on every "
           "rank)",
           op, counts.size(), size);
  for (size_t r = 0; r < counts.size(); ++r)
    TS_CHECK(counts[r] >= 0, "nccl: {}: counts[{}] = {} is negative", op, r, counts[r]);
}

}  // namespace

WorkHandle NcclCommunicator::all_reduce_async(Tensor t, ReduceOp op) {
  check_tensor("all_reduce: t", t, impl_->device);
  void* p = t.raw_data();
  const auto n = size_t(t.numel());
  const ncclDataType_t type = nccl_type(t.dtype());
  Impl& m = *impl_;
  return m.launch(fmt::format("all_reduce of {}", t.desc()), {t}, [&](ncclComm_t c) {
    if (n > 0) m.settle(c, ncclAllReduce(p, p, n, type, nccl_op(op), c, m.stream), "ncclAllReduce");
  });
}

WorkHandle NcclCommunicator::reduce_scatter_async(Tensor in, Tensor out,
                                                  std::vector<int64_t> counts, ReduceOp op) {
  check_tensor("reduce_scatter: in", in, impl_->device);
  check_tensor("reduce_scatter: out", out, impl_->device);
  check_counts("reduce_scatter", counts, impl_->size);
  Impl& m = *impl_;
  const std::vector<int64_t> off = offsets_of(counts);
  const auto me = size_t(m.rank);
  TS_CHECK(in.dtype() == out.dtype(), "nccl: reduce_scatter: in {} and out {} differ in dtype",
           in.desc(), out.desc());
  TS_CHECK(in.numel() == off.back(),
           "nccl: reduce_scatter: in {} for counts summing to {}: expected that many elements",
           in.desc(), off.back());
  TS_CHECK(out.numel() == counts[me],
           "nccl: reduce_scatter: out {} on rank {}: expected counts[{}] = {} elements", out.desc(),
           me, me, counts[me]);
  const size_t es = dtype_size(in.dtype());
  char* pin = static_cast<char*>(in.raw_data());
  void* pout = out.raw_data();
  TS_CHECK(!overlaps(in, out) || pout == pin + size_t(off[me]) * es,
           "nccl: reduce_scatter: out overlaps in but is not this rank's part of it (in place "
           "means out = in[{}, {}))",
           off[me], off[me + 1]);
  const ncclDataType_t type = nccl_type(in.dtype());
  const bool equal =
      !m.opt.always_grouped &&
      std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == counts[0]; });
  return m.launch(fmt::format("reduce_scatter of {}", in.desc()), {in, out}, [&](ncclComm_t c) {
    if (off.back() == 0) return;
    if (equal) {
      m.settle(c, ncclReduceScatter(pin, pout, size_t(counts[0]), type, nccl_op(op), c, m.stream),
               "ncclReduceScatter");
      return;
    }
    // Unequal parts: one reduce per rank, rooted at the part's owner, in one fused group. Only
    // the root writes its recvbuff; the others get their own send range (never written).
    NCCL_CHECK(ncclGroupStart());
    for (size_t r = 0; r < counts.size(); ++r) {
      if (counts[r] == 0) continue;
      char* src = pin + size_t(off[r]) * es;
      const ncclResult_t res = ncclReduce(src, r == me ? pout : src, size_t(counts[r]), type,
                                          nccl_op(op), int(r), c, m.stream);
      if (res != ncclSuccess && res != ncclInProgress) {
        (void)ncclGroupEnd();
        m.settle(c, res, "ncclReduce (grouped reduce-scatter)");
      }
    }
    m.settle(c, ncclGroupEnd(), "ncclGroupEnd (grouped reduce-scatter)");
  });
}

WorkHandle NcclCommunicator::all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) {
  check_tensor("all_gather: in", in, impl_->device);
  check_tensor("all_gather: out", out, impl_->device);
  check_counts("all_gather", counts, impl_->size);
  Impl& m = *impl_;
  const std::vector<int64_t> off = offsets_of(counts);
  const auto me = size_t(m.rank);
  TS_CHECK(in.dtype() == out.dtype(), "nccl: all_gather: in {} and out {} differ in dtype",
           in.desc(), out.desc());
  TS_CHECK(in.numel() == counts[me],
           "nccl: all_gather: in {} on rank {}: expected counts[{}] = {} elements", in.desc(), me,
           me, counts[me]);
  TS_CHECK(out.numel() == off.back(),
           "nccl: all_gather: out {} for counts summing to {}: expected that many elements",
           out.desc(), off.back());
  const size_t es = dtype_size(in.dtype());
  void* pin = in.raw_data();
  char* pout = static_cast<char*>(out.raw_data());
  TS_CHECK(!overlaps(in, out) || pin == pout + size_t(off[me]) * es,
           "nccl: all_gather: in overlaps out but is not this rank's part of it (in place means "
           "in = out[{}, {}))",
           off[me], off[me + 1]);
  const ncclDataType_t type = nccl_type(in.dtype());
  const bool equal =
      !m.opt.always_grouped &&
      std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == counts[0]; });
  return m.launch(fmt::format("all_gather into {}", out.desc()), {in, out}, [&](ncclComm_t c) {
    if (off.back() == 0) return;
    if (equal) {
      m.settle(c, ncclAllGather(pin, pout, size_t(counts[0]), type, c, m.stream), "ncclAllGather");
      return;
    }
    // Unequal parts: one broadcast per rank from its own input into its part of every output,
    // in one fused group (in place at the root when in is already that part).
    NCCL_CHECK(ncclGroupStart());
    for (size_t r = 0; r < counts.size(); ++r) {
      if (counts[r] == 0) continue;
      char* dst = pout + size_t(off[r]) * es;
      const ncclResult_t res =
          ncclBroadcast(r == me ? pin : dst, dst, size_t(counts[r]), type, int(r), c, m.stream);
      if (res != ncclSuccess && res != ncclInProgress) {
        (void)ncclGroupEnd();
        m.settle(c, res, "ncclBroadcast (grouped all-gather)");
      }
    }
    m.settle(c, ncclGroupEnd(), "ncclGroupEnd (grouped all-gather)");
  });
}

WorkHandle NcclCommunicator::broadcast_async(Tensor t, int root) {
  check_tensor("broadcast: t", t, impl_->device);
  Impl& m = *impl_;
  TS_CHECK(root >= 0 && root < m.size, "nccl: broadcast: root {} out of range for {} ranks", root,
           m.size);
  void* p = t.raw_data();
  const auto n = size_t(t.numel());
  const ncclDataType_t type = nccl_type(t.dtype());
  return m.launch(fmt::format("broadcast of {} from rank {}", t.desc(), root), {t},
                  [&](ncclComm_t c) {
                    if (n > 0)
                      m.settle(c, ncclBroadcast(p, p, n, type, root, c, m.stream), "ncclBroadcast");
                  });
}

WorkHandle NcclCommunicator::barrier_async() {
  Impl& m = *impl_;
  return m.launch("barrier", {}, [&](ncclComm_t c) {
    m.settle(c, ncclAllReduce(m.barrier_buf, m.barrier_buf, 1, ncclFloat32, ncclSum, c, m.stream),
             "ncclAllReduce (barrier)");
  });
}

namespace {

// "send of f32[4, 8] to rank 1": what the watchdog names when a transfer never completes.
std::string transfer_name(const P2POp& op) {
  const bool send = op.kind == P2POp::Kind::send;
  return fmt::format("{} of {} {} rank {}", send ? "send" : "recv", op.t.desc(),
                     send ? "to" : "from", op.peer);
}

}  // namespace

WorkHandle NcclCommunicator::send_async(Tensor t, int peer) {
  return batch_send_recv_async({P2POp::send(std::move(t), peer)});
}

WorkHandle NcclCommunicator::recv_async(Tensor t, int peer) {
  return batch_send_recv_async({P2POp::recv(std::move(t), peer)});
}

WorkHandle NcclCommunicator::batch_send_recv_async(std::vector<P2POp> ops) {
  Impl& m = *impl_;
  std::vector<Tensor> keep;
  std::string what;
  for (const P2POp& op : ops) {
    const char* call = op.kind == P2POp::Kind::send ? "send" : "recv";
    check_tensor(fmt::format("{}(peer {}): t", call, op.peer).c_str(), op.t, m.device);
    check_p2p_peer(call, op.t, op.peer, m.rank, m.size);
    keep.push_back(op.t);
    what += (what.empty() ? "" : ", ") + transfer_name(op);
  }
  return m.launch(std::move(what), std::move(keep), [&](ncclComm_t c) {
    NCCL_CHECK(ncclGroupStart());
    for (const P2POp& op : ops) {
      const auto n = size_t(op.t.numel());
      if (n == 0) continue;
      const ncclDataType_t type = nccl_type(op.t.dtype());
      const ncclResult_t res = op.kind == P2POp::Kind::send
                                   ? ncclSend(op.t.raw_data(), n, type, op.peer, c, m.stream)
                                   : ncclRecv(op.t.raw_data(), n, type, op.peer, c, m.stream);
      if (res != ncclSuccess && res != ncclInProgress) {
        (void)ncclGroupEnd();
        m.settle(c, res, op.kind == P2POp::Kind::send ? "ncclSend" : "ncclRecv");
      }
    }
    m.settle(c, ncclGroupEnd(), "ncclGroupEnd (send/recv)");
  });
}

std::vector<std::string> NcclCommunicator::all_gather_bytes(const std::string& mine) {
  return impl_->bootstrap->all_gather_bytes(mine);
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  std::shared_ptr<Communicator> sub = impl_->bootstrap->split(color, key);
  return std::make_unique<NcclCommunicator>(std::move(sub), impl_->device, impl_->opt);
}

void NcclCommunicator::wait_host(const WorkHandle& w) const {
  const auto* work = dynamic_cast<const NcclWork*>(w.get());
  TS_CHECK(work, "nccl: wait_host: the handle is not from an NCCL communicator");
  // No timeout here: a collective that never completes is the watchdog's to report.
  CUDA_CHECK(cudaEventSynchronize(work->op().done_ev));
  work->op().poll();
}

int device_for_launch(const LaunchInfo& launch) {
  const DeviceProbe& p = probe_devices();
  TS_CHECK(p.count > 0, "nccl: {} needs a CUDA device: {}", launch.describe(), p.reason);
  return launch.local_rank % p.count;
}

std::shared_ptr<NcclCommunicator> nccl_communicator_for_launch(
    const LaunchInfo& launch, std::shared_ptr<Communicator> bootstrap, NcclOptions opt) {
  TS_CHECK(
      bootstrap && bootstrap->world_size() == launch.world_size && bootstrap->rank() == launch.rank,
      "nccl: the bootstrap communicator ({}) is not the launch's ({})",
      bootstrap ? bootstrap->describe() : "null", launch.describe());
  // Without a device, still construct: the constructor takes part in the id exchange before it
  // fails, so that the other ranks get an error instead of waiting for this one.
  const int device = probe_devices().count > 0 ? device_for_launch(launch) : 0;
  return std::make_shared<NcclCommunicator>(std::move(bootstrap), device, std::move(opt));
}

}  // namespace tessera::dist
