// The NCCL backend of Communicator: collectives on CUDA tensors between processes, one
// GPU per process.
//
// Start-up. NCCL needs a unique id created by rank 0 and handed to every rank; a CPU
// communicator that already works carries it (nccl_id.h): the MPI communicator under mpirun /
// srun, the store communicator (store_comm.h: rank 0's authenticated TCP store) for
// torchrun-style launches (MASTER_ADDR / MASTER_PORT, no MPI), the LocalCommunicator for one
// process. The bootstrap communicator stays alive with this one: it serves all_gather_bytes
// (the control plane: config hashes, scalars) and split without touching the GPU, and the MPI
// one keeps its heartbeat running, which is what turns a dead peer into a clear error naming
// the rank (see below); over the store, a rank whose process ended is named by the others at
// their next all_gather_bytes, and NCCL's watchdog (timeout_s) is the backstop.
//
// Streams. Each communicator owns a communication stream (non-blocking, highest priority, so
// that it neither serialises with the legacy default stream nor queues behind compute kernels).
// An async collective
//   1. records an event on the caller's current stream (cuda::current_stream(), the compute
//      stream) and makes the communication stream wait for it: the collective sees everything
//      the compute stream wrote before the call (e.g. a bucket's gradients);
//   2. enqueues the NCCL call(s) on the communication stream;
//   3. records a completion event there, and returns at once.
// Work::wait() makes the caller's *current stream* wait for the completion event
// (cudaStreamWaitEvent): device-side ordering, the host does not block. That is what DDP and
// ZeRO need: after wait() they run the optimizer, whose kernels go on the same compute stream,
// and anything the host reads from device memory goes through a synchronising copy on that
// stream (cuda::to_host). Host code that must know the data has landed (a test, a checkpoint
// written from another stream) calls NcclCommunicator::wait_host(work), which blocks on the
// event. done() queries the event and never blocks; end_time() is the host time at which
// completion was first observed (0 until then).
//
// Memory. The work keeps its tensors (storage) alive, and the communicator keeps every work
// until its completion event has fired, even if the caller drops the handle: a tensor freed
// right after all_reduce_async(t) goes back to the caching allocator only once NCCL is done
// with it.
//
// Unequal counts. NCCL's reduce-scatter and all-gather need the same count on every rank; the
// interface allows any counts (ZeRO's shards are aligned, so the last one is shorter). With
// equal counts this calls ncclReduceScatter / ncclAllGather; otherwise a group (ncclGroupStart
// / End, one fused launch) of one ncclReduce per rank r into rank r's output (reduce-scatter)
// or one ncclBroadcast per rank r from rank r's input (all-gather). No padding, no scratch
// buffer, no extra copies; ranks with a count of 0 get no call.
//
// Failures. The NCCL communicator is created non-blocking (ncclConfig_t::blocking = 0), so no
// NCCL call can hang the caller: a call that answers ncclInProgress (initialisation, the first
// collective's connection set-up) is polled with ncclCommGetAsyncError for up to timeout_s,
// then the communicator is aborted and an Error names it and the call. A collective that never
// completes on the device cannot throw into the training thread (its wait() returned long ago);
// a watchdog thread per communicator checks the in-flight collectives every poll_s: one that has
// not completed after timeout_s, or an asynchronous NCCL error, makes it print which
// communicator, which collective and why on stderr and exit the process with
// kPeerLostExitCode (the driver ends its kernels), as the MPI backend does for a dead
// peer. (With a custom on_failure the communicator is only marked failed: later calls throw,
// and the destructor aborts the NCCL communicator.) With the MPI bootstrap a dead *process* is
// normally caught first by the MPI heartbeat (parallel.timeout_s), which names the rank; timeout_s
// here is the backstop for a peer that is alive but never joins the collective, so its default is
// long (a peer may be busy writing a checkpoint or evaluating).
//
// Tensors: contiguous, on this communicator's device, f32 or bf16 (in and out of one call
// share the dtype). Average is ncclAvg (NCCL >= 2.10; checked at construction).
#pragma once
#include <cuda_runtime_api.h>

#include <functional>
#include <memory>
#include <string>

#include "dist/bootstrap.h"
#include "dist/communicator.h"

namespace tessera::dist {

struct NcclOptions {
  // A collective (or an NCCL call answering ncclInProgress) not complete after this long is a
  // failure. Long by default: a peer may be busy for minutes before it joins.
  double timeout_s = 600;
  double poll_s = 0.05;  // how often the watchdog looks at the in-flight collectives
  // What the watchdog does with a failure (it runs on the watchdog thread); the default prints
  // `message` to stderr and exits with kPeerLostExitCode. Tests replace it.
  std::function<void(const std::string& message)> on_failure;
  // Use the grouped reduce / broadcast path of reduce-scatter and all-gather even when the
  // counts are equal (tests: it is the only way to run that path on one GPU).
  bool always_grouped = false;
};

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (every rank calls it, each with its own device): exchanges the
  // unique id over it and creates the NCCL communicator with the same ranks. Selects `device`
  // on the calling thread.
  NcclCommunicator(std::shared_ptr<Communicator> bootstrap, int device, NcclOptions opt = {});
  ~NcclCommunicator() override;

  int rank() const override;
  int world_size() const override;
  std::string backend() const override { return "nccl"; }
  // "nccl: NCCL 2.28.9, rank 0 of 2 on cuda:0, id over mpi"
  std::string describe() const override;

  WorkHandle all_reduce_async(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter_async(Tensor in, Tensor out, std::vector<int64_t> counts,
                                  ReduceOp op) override;
  WorkHandle all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) override;
  WorkHandle broadcast_async(Tensor t, int root) override;
  // NCCL has no barrier: a one-element all-reduce on a private buffer. Like every collective
  // here, wait() orders the current stream after it; wait_host() blocks the host.
  WorkHandle barrier_async() override;
  // ncclSend / ncclRecv on the communication stream, with the collectives' stream and event
  // discipline (wait() orders the current stream after the transfer). A send may wait on the
  // device until its peer's recv runs, and this communicator's calls run in stream order: what
  // must progress together goes in one batch_send_recv_async, which is one NCCL group.
  // Zero-element transfers are skipped (their peer skips the matching one too).
  WorkHandle send_async(Tensor t, int peer) override;
  WorkHandle recv_async(Tensor t, int peer) override;
  WorkHandle batch_send_recv_async(std::vector<P2POp> ops) override;
  // Over the bootstrap communicator (host only).
  std::vector<std::string> all_gather_bytes(const std::string& mine) override;
  // Splits the bootstrap communicator and builds an NCCL communicator on each part.
  std::unique_ptr<Communicator> split(int color, int key) override;

  // Blocks the host until `w` (from this communicator) is complete on the device; a watchdog
  // failure ends the process before this could wait forever.
  void wait_host(const WorkHandle& w) const;
  cudaStream_t stream() const;
  int device() const;
  // Collectives started and not yet seen complete (for tests and logs).
  size_t in_flight() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The GPU a process of a launch uses: local_rank % device_count (ranks on a node spread over
// its GPUs). Throws, with the CUDA runtime's reason, when there is no device.
int device_for_launch(const LaunchInfo& launch);

// The NCCL communicator for a launched process: bootstrap is the CPU communicator of the same
// launch (communicator_for_launch); device from device_for_launch.
std::shared_ptr<NcclCommunicator> nccl_communicator_for_launch(
    const LaunchInfo& launch, std::shared_ptr<Communicator> bootstrap, NcclOptions opt = {});

}  // namespace tessera::dist
