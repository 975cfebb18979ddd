// Communicator: the collective operations data-parallel training needs and the point-to-point
// transfers pipeline parallelism needs, on f32 tensors, behind one interface with several
// backends:
//   LocalCommunicator (local_comm.h)  one process; every collective is the identity.
//   MpiCommunicator   (mpi_comm.h)    processes started by mpirun or srun, CPU tensors.
//   (NCCL, with the CUDA backend: device tensors, same interface.)
//
// Every collective has an asynchronous form that returns a Work handle at once; the operation
// runs in the background and wait() blocks until it is complete. The blocking forms are
// async(...)->wait(). All ranks of a communicator must start the same collectives in the same
// order (as with MPI and NCCL); the handles may be waited on in any order.
//
// Point-to-point transfers (send/recv, for pipeline parallelism) are not collectives: only the
// two ranks of a pair take part. Between one sender and one receiver, messages match in the
// order they were started: the k-th recv from rank p on rank q receives rank p's k-th send to
// rank q, and the two tensors must have the same number of elements. A transfer may wait until
// its peer has started the matching one (assume it always does), and a backend may run one
// communicator's transfers one after another in the order they were started (NCCL: one
// stream). Hence the portable rule: transfers that must progress together (a ring exchange, two
// ranks swapping tensors, a stage sending forward while receiving from the same neighbour) are
// started by one batch_send_recv_async call, never as separate calls whose matches are started
// in another order on the peer. (MPI progresses every transfer on its own; the rule costs it
// nothing.) The blocking send(...) / recv(...) are async(...)->wait().
//
// Tensors: contiguous f32 on the backend's device. The main use is a contiguous range of a
// flat buffer (FlatParameters::grads().slice_rows(begin, end)); a handle keeps its tensors'
// storage alive until it completes.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tessera::dist {

enum class ReduceOp { sum, average };

// One transfer of a batch_send_recv_async: send t to rank peer, or receive t from it.
struct P2POp {
  enum class Kind { send, recv };
  Kind kind;
  Tensor t;
  int peer;
  static P2POp send(Tensor t, int peer) { return {Kind::send, std::move(t), peer}; }
  static P2POp recv(Tensor t, int peer) { return {Kind::recv, std::move(t), peer}; }
};

// One collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation is complete (rethrows its failure).
  virtual void wait() = 0;
  // True once complete; never blocks.
  virtual bool done() const = 0;
  // Seconds on the steady clock (trace time base, see trace.h) when the operation was started
  // and when it was seen complete; end is 0 until then.
  virtual double start_time() const = 0;
  virtual double end_time() const = 0;
};
using WorkHandle = std::shared_ptr<Work>;
// A Work that was complete when made: what a communicator returns for an operation it finished
// before returning (one rank's collectives, the store's barrier).
WorkHandle completed_work();
// One Work for several: wait() waits for each (rethrowing the first failure), done() when all
// are, started at the first's start and ended at the last end.
WorkHandle all_of(std::vector<WorkHandle> works);

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "local", "mpi", ... and a line for logs ("mpi: Open MPI v4.1.4, thread level FUNNELED").
  virtual std::string backend() const = 0;
  virtual std::string describe() const { return backend(); }

  // t <- op over ranks of t, in place.
  virtual WorkHandle all_reduce_async(Tensor t, ReduceOp op = ReduceOp::sum) = 0;
  // Reduces `in` (sum of counts elements, the same layout on every rank) over ranks and leaves
  // elements [offset_r, offset_r + counts[r]) of the result in rank r's `out` (counts[rank]
  // elements). Counts may differ and may be 0.
  virtual WorkHandle reduce_scatter_async(Tensor in, Tensor out, std::vector<int64_t> counts,
                                          ReduceOp op = ReduceOp::sum) = 0;
  // Concatenates every rank's `in` (counts[r] elements) into `out` (sum of counts), in rank
  // order. `in` may be this rank's own part of `out` (in place).
  virtual WorkHandle all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) = 0;
  // t <- root's t.
  virtual WorkHandle broadcast_async(Tensor t, int root) = 0;
  virtual WorkHandle barrier_async() = 0;

  // Sends t to rank `peer` / receives into t from rank `peer` (see the top of this file for the
  // order in which they match). REQUIRES: 0 <= peer < world_size(), peer != rank(); t is
  // contiguous f32 (its storage is kept alive until the transfer completes; a recv's t must not
  // be read, nor a send's t written, before then).
  virtual WorkHandle send_async(Tensor t, int peer) = 0;
  virtual WorkHandle recv_async(Tensor t, int peer) = 0;
  // Starts the transfers together (one NCCL group) and returns one handle for all of them; the
  // batch's order is the order of its messages to (and from) each peer. The default starts
  // each with send_async / recv_async, for backends whose transfers progress independently.
  virtual WorkHandle batch_send_recv_async(std::vector<P2POp> ops);

  void all_reduce(Tensor t, ReduceOp op = ReduceOp::sum) { all_reduce_async(t, op)->wait(); }
  void reduce_scatter(Tensor in, Tensor out, std::vector<int64_t> counts,
                      ReduceOp op = ReduceOp::sum) {
    reduce_scatter_async(in, out, std::move(counts), op)->wait();
  }
  void all_gather(Tensor in, Tensor out, std::vector<int64_t> counts) {
    all_gather_async(in, out, std::move(counts))->wait();
  }
  void broadcast(Tensor t, int root) { broadcast_async(t, root)->wait(); }
  void barrier() { barrier_async()->wait(); }
  void send(Tensor t, int peer) { send_async(t, peer)->wait(); }
  void recv(Tensor t, int peer) { recv_async(t, peer)->wait(); }
  void batch_send_recv(std::vector<P2POp> ops) { batch_send_recv_async(std::move(ops))->wait(); }

  // Control plane (small host data, blocking): every rank's bytes, in rank order. Used for
  // start-up checks (config hashes) and scalars.
  virtual std::vector<std::string> all_gather_bytes(const std::string& mine) = 0;

  // Every rank's value, in rank order; summing them in that order on every rank gives a result
  // that is bit-identical across ranks (an MPI all-reduce need not be).
  std::vector<double> all_gather_f64(double mine);
  double sum_f64(double mine);
  double average_f64(double mine) { return sum_f64(mine) / double(world_size()); }

  // A communicator over the ranks that pass the same color, ordered by (key, rank); every rank
  // of this communicator must call it. Used by tests to run 1-, 2- and 4-rank groups in one job.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // The same split, given every rank's (color, key) as a function of its rank here. A backend
  // that cannot ask its peers needs it: the planner's meta communicator (meta_comm.h) simulates
  // one rank of a job without the others. The default calls split(rule(rank())).
  using SplitRule = std::function<std::pair<int, int>(int rank)>;
  virtual std::unique_ptr<Communicator> split_by(const SplitRule& rule);
};

// Shards of a flat buffer of n elements over `world` ranks: rank r owns [begin(r), begin(r+1)),
// boundaries rounded to multiples of `align` elements (the last shard takes the remainder).
struct ShardLayout {
  ShardLayout() = default;
  ShardLayout(int64_t n, int world, int64_t align);
  int64_t begin(int r) const { return bounds.at(size_t(r)); }
  int64_t end(int r) const { return bounds.at(size_t(r) + 1); }
  int64_t size(int r) const { return end(r) - begin(r); }
  int world() const { return int(bounds.size()) - 1; }
  // Elements of [a, b) that each rank owns (what reduce-scatter / all-gather of that range
  // moves to / from each rank).
  std::vector<int64_t> counts_in(int64_t a, int64_t b) const;
  std::vector<int64_t> bounds;  // world + 1 entries, bounds[0] = 0, bounds[world] = n
};

// Checks a tensor a collective is given: defined, f32, contiguous and, with cpu_only, on the cpu
// (backends on other devices check their own; one rank takes any device). `what` names the call
// ("all_reduce: t").
void check_collective_tensor(const char* what, const Tensor& t, bool cpu_only = true);
// Checks the arguments of send_async / recv_async on rank `rank` of `world`: `op` is "send" or
// "recv"; the peer must be another rank in range, the tensor as check_collective_tensor wants
// it. Errors name the call, the peer, the tensor and the rank.
void check_p2p(const char* op, const Tensor& t, int peer, int rank, int world,
               bool cpu_only = true);
// The peer part of check_p2p alone (for backends that check tensors their own way).
void check_p2p_peer(const char* op, const Tensor& t, int peer, int rank, int world);

}  // namespace tessera::dist
