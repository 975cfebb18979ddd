// The MPI backend (Open MPI from Debian; CPU tensors). This header compiles with or without MPI:
// without it (TESSERA_HAVE_MPI = 0), mpi_world() throws an Error saying MPI is not built in.
//
// Design: one communication thread per process owns MPI. It calls MPI_Init_thread and makes
// every later MPI call, so MPI_THREAD_FUNNELED is all we need from the library (we check that
// it is provided; MPI_THREAD_MULTIPLE would also do, but costs locks inside Open MPI and buys
// nothing here). Callers (the training thread, autograd's gradient-ready hooks) queue operations
// and get a Work handle back at once. The thread starts them as non-blocking MPI calls
// (MPI_Iallreduce, MPI_Ireduce_scatter, MPI_Iallgatherv, MPI_Ibcast, MPI_Ibarrier) in queue
// order, which is the same on every rank, and polls them with MPI_Test. Open MPI makes progress
// on a non-blocking collective only inside MPI calls, so a collective started and then left
// alone while the training thread computes would not move; the polling thread is what makes
// communication really overlap the backward pass. Large all-reduces, reduce-scatters and
// all-gathers (MpiOptions::ring_min_bytes) run instead as Tessera's own ring over MPI_Isend /
// MPI_Irecv, a stage at a time on the same thread (dist/ring_schedule.h; docs/DISTRIBUTED.md).
//
// Failure detection: MPI's own reaction to a dead peer is to hang (a collective waits forever)
// or to abort the whole job without saying who died. The same thread therefore runs a
// heartbeat on a duplicate of MPI_COMM_WORLD: every heartbeat interval it sends a one-int
// message to each other rank and drains the ones it receives. A rank not heard from for
// `timeout_s` seconds is declared dead: the thread prints which rank (and for how long) on
// stderr and exits the process with code kPeerLostExitCode, so no rank hangs. Heartbeats come
// from the communication thread, not the training loop, so a rank busy computing (a long
// evaluation, a checkpoint write) keeps beating; only a dead process or an unreachable node
// goes silent. A rank alive but stuck (its training thread deadlocked) keeps beating; each beat
// therefore carries how many operations the rank's callers have submitted and whether one of
// them is waiting, and a rank that has waited stuck_timeout_s on an operation while a peer, not
// waiting itself, has not moved its count for as long ends the job naming that peer.
// MPI errors are returned rather than fatal (MPI_ERRORS_RETURN); one that coincides with a dead
// peer is reported by the heartbeat, which names the rank.
//
// Point-to-point: send_async / recv_async are MPI_Isend / MPI_Irecv on the communicator (one
// tag), started by the same thread in the order they were called, so MPI's non-overtaking rule
// gives the order the interface promises. Each one progresses on its own: a rank may start
// sends and recvs with any peers in any order and wait on them together. A peer that died is
// the heartbeat's to report; one that is alive but never posts the matching call makes the
// transfer fail after MpiOptions::p2p_timeout_s (its wait() throws, naming call and peer).
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "dist/communicator.h"

namespace tessera::dist {

struct MpiOptions {
  double timeout_s = 30;   // declare a silent rank dead after this long
  double heartbeat_s = 0;  // interval between heartbeats; 0 = min(1 s, timeout_s / 5)
  // A send or recv not complete after this long fails (its wait() throws an Error naming the
  // call and the peer): the peer is alive, or the heartbeat would have ended the job, but never
  // posted the matching call. Long, like NCCL's, since a peer may be busy for minutes first.
  double p2p_timeout_s = 600;
  // A rank that has waited this long on an operation, while a peer alive (heartbeats arrive)
  // and not waiting itself has started no communication for as long, ends the job naming that
  // peer: its training thread is stuck outside communication. Long, like NCCL's watchdog;
  // 0 = never.
  double stuck_timeout_s = 600;
  // All-reduces, reduce-scatters and all-gathers of at least this many bytes run as Tessera's ring
  // over point-to-point transfers (dist/ring_schedule.h), smaller ones as MPI's own collectives.
  int64_t ring_min_bytes = int64_t(256) << 10;
  // Whether collectives progress while every caller computes (communication overlapping the
  // backward pass). automatic: when this rank has a core to spare beyond its OpenMP threads
  // (its bound cores, or its share of the node's); otherwise they move only while some caller
  // waits, since progressing them would take the cycles of the computation they overlap.
  // Point-to-point transfers always progress.
  enum class Overlap { automatic, on, off };
  Overlap overlap = Overlap::automatic;
  // The names parallel.overlap uses: "on", "off", and "auto" (or anything else) for automatic.
  static Overlap overlap_named(std::string_view name) {
    return name == "on" ? Overlap::on : name == "off" ? Overlap::off : Overlap::automatic;
  }
};

// Exit status of a rank that stops because another rank died.
constexpr int kPeerLostExitCode = 3;

// True when this build has the MPI backend.
bool mpi_built_in();
// One line for `tessera features`: "mpi: yes (Open MPI v4.1.4 ...)" or "mpi: no (...)".
std::string mpi_feature_line();

// The communicator over every process of the job (MPI_COMM_WORLD). The first call starts MPI
// and the communication thread (later calls return the same object; their options are
// ignored). MPI is finalized at exit (mpi_shutdown(), or a static destructor), after a barrier
// so that no rank tears down while another still needs it.
std::shared_ptr<Communicator> mpi_world(const MpiOptions& opt = {});
// True once mpi_world() has started MPI in this process.
bool mpi_running();
// Barrier, then MPI_Finalize. Idempotent; a no-op when MPI never started.
void mpi_shutdown();
// Kills every rank of the job (MPI_Abort) after an error that not all ranks share; returns
// without doing anything when MPI is not running.
void mpi_abort(int code);

}  // namespace tessera::dist
