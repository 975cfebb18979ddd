// Pipeline-parallel schedules as pure logic: for p ranks (pipeline stages), m micro-batches and
// v virtual stages per rank, the ordered list of what each rank does in one training step:
// forwards, backwards, and the transfers of activations and gradients between neighbours.
// A simulator runs all ranks' lists against each other, for tests and for a planner.
//
// Stages. The model is cut into S = v * p consecutive stages; stage s lives on rank s % p as
// that rank's chunk s / p (Megatron-LM's interleaved assignment; with v = 1, stage = rank).
// Activations flow from stage s to s + 1 (rank r to rank (r + 1) % p), gradients back.
//
// Schedules (see each kind). Every (micro, stage) forward runs once, before its backward.
//
// Communication. A rank's list is a sequence of steps, each either one compute action or a
// batch of transfers that the runtime posts together (Communicator::batch_send_recv_async) and
// waits for before the next step. Between two compute units there is at most one batch: the
// sends of what the previous unit produced, then the recvs of what the next unit needs. A unit
// is one compute action, except in interleaved 1F1B's steady state, where it is a forward and
// a backward (Megatron-LM's send_forward_backward_recv_forward_backward). The simulator holds
// each batch until every transfer in it has met its peer's matching one (both posted:
// rendezvous, the strictest point-to-point semantics), and matches messages between a pair of
// ranks in the order posted, activations and gradients alike, as Communicator promises. Every
// schedule here is checked (tests/test_pipeline_schedule.cpp) to finish under it for p <= 8,
// m <= 32, v <= 4; a runtime that runs the batches as listed cannot deadlock, whether its sends
// wait for the receiver (NCCL, MPI's large messages) or not.
#pragma once
#include <string>
#include <vector>

namespace tessera::dist::pipeline {

enum class ScheduleKind {
  // All forwards, then all backwards, in micro-batch order. The baseline:
  // bubble (p - 1) / (m + p - 1) like 1F1B, but every rank keeps m activations alive. Needs
  // v = 1.
  gpipe,
  // PipeDream-flush: rank r runs min(p - 1 - r, m) warm-up forwards, then alternates one
  // forward and one backward, then the remaining backwards. At most p - r activations alive.
  // Needs v = 1.
  one_f_one_b,
  // Megatron-LM's interleaved 1F1B: forwards go round the chunks in groups of p micro-batches
  // (micro-batches g..g+p-1 through chunk 0, then chunk 1, ...); warm-up (p - 1 - r) * 2 +
  // (v - 1) * p forwards. Bubble (p - 1) / (v * m + p - 1). Needs m % p == 0; with v = 1 it
  // is one_f_one_b.
  interleaved_1f1b,
};
std::string schedule_name(ScheduleKind kind);

enum class Op {
  forward,
  backward,
  send_activation,  // this rank's stage `stage` output, to the rank of stage + 1
  recv_activation,  // stage `stage`'s output, from its rank (input of stage + 1 here)
  send_gradient,    // gradient of stage `stage`'s input, to the rank of stage - 1
  recv_gradient,    // gradient of stage `stage`'s input, from its rank (for stage - 1 here)
};
std::string op_name(Op op);
bool is_transfer(Op op);
bool is_send(Op op);

struct Action {
  Op op;
  int micro;  // micro-batch, 0..m-1
  int stage;  // global stage: computed here, or whose output (input's gradient) moves
  int peer;   // transfers: the other rank; -1 for compute
  // "F(micro 3, stage 5)", "send activation (micro 3, stage 5) to rank 2"
  std::string str() const;
  bool operator==(const Action&) const = default;
};

// One compute action, or a batch of transfers posted together.
using Step = std::vector<Action>;

struct Schedule {
  ScheduleKind kind;
  int p, m, v;
  std::vector<std::vector<Step>> ranks;  // ranks[r]: rank r's steps, in order
  int stages() const { return p * v; }
};

// The schedule of `kind`. Throws an Error naming the kind and the numbers when they do not fit
// it (p, m, v >= 1; 1F1B: v == 1; interleaved: m % p == 0).
Schedule make_schedule(ScheduleKind kind, int p, int m, int v = 1);

// Costs of one stage's work (the simulator's unit of time is arbitrary).
struct SimCosts {
  double forward = 1;
  double backward = 2;
  double transfer = 0;  // from the moment both sides have posted to completion
};

struct SimResult {
  bool ok = false;
  // Why not ok: a deadlock (every blocked rank and the action it waits in), a transfer whose
  // partner is a different one (micro or stage), or an action run before its input exists.
  std::string error;
  double makespan = 0;
  // 1 - busy / (p * makespan): the share of rank time spent idle.
  double bubble_fraction = 0;
  std::vector<int> peak_live_activations;  // per rank: forwards whose backward has not run
  std::vector<double> busy;                // per rank: compute time
};

// Runs every rank's steps against each other (see the top of this file for the semantics).
SimResult simulate(const Schedule& s, const SimCosts& costs = {});

}  // namespace tessera::dist::pipeline
