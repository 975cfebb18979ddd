// One training step's timeline on a cluster, from the meta-device traces of some of the job's
// ranks (e.g. one per pipeline stage: ranks that do the same are not simulated twice).
//
// Per rank, events run in trace order:
//   - a kernel runs on the compute stream for kernel_seconds (cost_model.h);
//   - a collective is issued when the compute stream reaches it (it follows the kernels before
//     it, as NCCL does through an event) and runs on the rank's communication stream, first in
//     first out. It starts when the stream is free and every simulated member of its group has
//     issued its matching collective (the k-th on that group); members that are not simulated
//     are taken to issue it at the same time as this rank (symmetric ranks). On a cluster whose
//     collectives do not overlap computation (ClusterSpec::collectives_overlap_compute: local
//     ranks with no core to spare), a collective counts as issued only once the compute stream
//     waits on work still in flight, or has no events left;
//   - send / recv to another simulated rank are matched in order per (sender, receiver); the
//     transfer starts when both sides have issued theirs. Transfers do not queue behind the
//     collectives' stream or each other (NCCL runs a batch of them as one group, and a
//     pipeline's transfers go through their own communicator). To a rank that is not
//     simulated, a transfer starts when issued;
//   - a wait stalls the compute stream until every transfer or collective of that work id has
//     finished: stalls on transfers are the pipeline bubble, and so is the part of a stall on a
//     collective during which it waited for another simulated rank to issue it (a stage still
//     computing); the rest of a stall on a collective is exposed communication. A wait on a work id
//     never issued (a previous step's) does not stall;
//   - marks are ignored.
// A rank's step ends when its last kernel, collective and transfer have.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/meta_device.h"
#include "plan/cluster.h"

namespace tessera::plan {

struct RankTrace {
  int rank = 0;
  std::vector<meta::Event> events;
};

struct RankTimes {
  int rank = 0;
  double step_seconds = 0;          // when this rank's last work ends
  double compute_seconds = 0;       // sum of its kernels' times
  double exposed_comm_seconds = 0;  // compute stream stalled on collectives
  double bubble_seconds = 0;        // compute stream stalled on send / recv, or on a
                                    // collective waiting for another simulated rank
  double comm_seconds = 0;          // sum of its collectives' and transfers' times
};

// Totals over all simulated ranks, for reports.
struct Total {
  int64_t count = 0;
  double seconds = 0;
  double flops = 0;  // kernels
  double bytes = 0;  // kernels: memory traffic; collectives: buffer bytes
};

struct Timeline {
  std::vector<RankTimes> ranks;  // in the order given
  // The step: when the last simulated rank ends.
  double step_seconds = 0;
  // Means over the simulated ranks.
  double compute_seconds = 0;
  double exposed_comm_seconds = 0;
  double bubble_seconds = 0;
  double comm_seconds = 0;
  std::map<std::string, Total> kernels;      // by kernel name
  std::map<std::string, Total> collectives;  // by op ("all_reduce", "send", ...)
};

// Throws an Error naming the ranks and events that wait forever (a wait whose transfer never
// meets its peer's, or collectives that never meet across members), and on a rank given twice.
Timeline simulate(const ClusterSpec& c, const std::vector<RankTrace>& ranks);

}  // namespace tessera::plan
