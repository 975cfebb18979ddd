// The emulated NCCL's communicator and how its calls run as stream work (see include/nccl.h).
//
// A call, or one communicator's calls from one group, becomes one task queued on the call's
// stream (tessera::emu::enqueue), so it runs in that stream's order like an NCCL kernel. Tasks
// of one communicator also run in the order they were issued (each takes a ticket when queued
// and waits for its turn), so that a communicator used from several streams still sends its
// messages in the one order that every rank agrees on.
//
// Collectives go through rank 0: each rank sends a header describing its call, then its input;
// rank 0 checks that every rank made the same call, computes every rank's output (reductions in
// rank order, see nccl_reduce.h) and sends each rank its own. Sends and receives go over the
// direct pair links, all of a group's progressed together so that a send/receive pair in one
// group cannot deadlock.
//
// A failure inside a task (a bad device pointer, a peer that closed its end, a timeout, ranks
// that disagree on the call) throws DeviceFault out of the task, records the error for
// ncclCommGetAsyncError, and shuts this rank's links down so that its peers fail too instead of
// waiting for it. After ncclCommAbort, tasks of the communicator do nothing.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nccl.h>

#include "emu/nccl_transport.h"

namespace tessera::emu::nccl {

enum class OpKind { all_reduce, reduce_scatter, all_gather, broadcast, reduce, send, recv };

// "ncclAllReduce", ...
const char* call_name(OpKind kind);
bool is_point_to_point(OpKind kind);
bool is_reduction(OpKind kind);
bool has_root(OpKind kind);

// One call, as made.
struct Op {
  OpKind kind = OpKind::all_reduce;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  ncclDataType_t type = ncclFloat32;
  ncclRedOp_t red = ncclSum;
  int root = 0;  // broadcast and reduce: the root; send and recv: the peer
  cudaStream_t stream = nullptr;
};

// The elements `op` reads from sendbuff and writes to recvbuff on `rank` of `nranks`.
size_t input_count(const Op& op, int rank, int nranks);
size_t output_count(const Op& op, int rank, int nranks);

class Comm {
 public:
  // links: from rendezvous() (empty when nranks == 1). timeout_s bounds every wait in a task.
  Comm(int rank, int nranks, int device, double timeout_s, Links links);
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  int device() const { return device_; }
  // "rank 1 of 2"
  std::string describe() const;

  // ncclSuccess, or the first failure's result; last_error() is the latest message recorded
  // for this communicator (failures of its work and errors of calls on it).
  ncclResult_t async_error() const;
  std::string last_error() const;
  void set_last_error(const std::string& message);
  // Records a failure (the first one sticks) and shuts the links down.
  void fail(ncclResult_t result, const std::string& message);

  // Waits until every task issued so far has run, at most the timeout. Returns the
  // communicator's error if it has failed, ncclSystemError after a timeout.
  ncclResult_t drain();
  // Shuts the links down: running tasks stop, queued ones will do nothing, peers see the
  // connection close.
  void abort();

  // A queued task's place in the communicator's issue order. Retired when the task has run,
  // or when the stream drops it unrun (the emulated device skips work once it has faulted), so
  // that neither later tasks nor drain() wait for work that will never come.
  class Ticket {
   public:
    Ticket(std::shared_ptr<Comm> comm, uint64_t id) : comm_(std::move(comm)), id_(id) {}
    ~Ticket() { comm_->retire(id_, ran_); }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    Comm& comm() const { return *comm_; }
    uint64_t id() const { return id_; }
    void mark_ran() { ran_ = true; }

   private:
    std::shared_ptr<Comm> comm_;
    uint64_t id_;
    bool ran_ = false;
  };
  // The next ticket. Callers hold issue_mutex() from taking it until its task is queued, so that
  // ticket order and queue order agree on every stream.
  static std::shared_ptr<Ticket> take_ticket(const std::shared_ptr<Comm>& comm);
  std::mutex& issue_mutex() { return issue_mu_; }

  // The task for ops (one communicator's calls, in call order): waits until every earlier
  // ticket has retired, then runs them. `what` names the work in reports.
  void run(const std::vector<Op>& ops, Ticket& ticket, const std::string& what);

 private:
  class Turn;

  void run_collective(const Op& op);
  void root_collective(const Op& op, uint64_t seq);
  void leaf_collective(const Op& op, uint64_t seq);
  void run_point_to_point(const std::vector<Op>& ops);
  void shut_down_links();
  // A ticket that retires unrun fails the communicator: the peers would wait for its messages.
  void retire(uint64_t ticket, bool ran);

  const int rank_, nranks_, device_;
  const double timeout_s_;
  Links links_;
  uint64_t collectives_ = 0;  // collectives run so far: their sequence numbers (task thread)

  std::mutex issue_mu_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ticket_ = 0;
  std::set<uint64_t> outstanding_;  // tickets handed out and not retired
  ncclResult_t error_ = ncclSuccess;
  std::string last_error_;
  std::atomic<bool> aborted_{false};
};

// Queues ops (non-empty, all for `comm`) as one task on ops[0].stream; when they name other
// streams too, those and the task are ordered both ways with events, as NCCL orders a group
// across streams. ncclUnhandledCudaError when an event call fails.
ncclResult_t launch(const std::shared_ptr<Comm>& comm, std::vector<Op> ops);

}  // namespace tessera::emu::nccl
