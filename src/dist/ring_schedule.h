// The ring schedules of reduce-scatter and all-gather over n ranks: the bandwidth-optimal
// algorithm for large messages (each rank sends and receives (n-1)/n of the buffer per phase,
// whatever n is), which NCCL and MPI libraries use for their large collectives. The buffer is cut
// into n segments, segment i ending on rank i; in each of n-1 steps a rank sends one segment to
// the next rank, (r+1) mod n, and receives one from the previous, (r-1) mod n. A backend runs the
// steps in order (step k+1 starts once both transfers of step k are complete). Backend-free, so
// that tests can run the schedule for any n on plain arrays.
#pragma once
#include <vector>

namespace tessera::dist {

struct RingStep {
  int send_segment;
  int recv_segment;
};

inline int ring_next(int rank, int n) {
  return (rank + 1) % n;
}
inline int ring_prev(int rank, int n) {
  return (rank + n - 1) % n;
}

// Reduce-scatter: at step k rank r sends segment (r-k-1) mod n (its own input at k = 0, after
// that the partial sum it received and added to at step k-1) and receives segment (r-k-2) mod n,
// to which it adds its own input. The last step receives segment r, which then holds the sum
// over all n ranks, each added once: the partial sums travel around the ring in rank order.
inline std::vector<RingStep> ring_reduce_scatter_steps(int rank, int n) {
  std::vector<RingStep> steps;
  for (int k = 0; k + 1 < n; ++k)
    steps.push_back({(rank - k - 1 + 2 * n) % n, (rank - k - 2 + 2 * n) % n});
  return steps;
}

// All-gather: at step k rank r sends segment (r-k) mod n (its own at k = 0, after that the one
// it received at step k-1) and receives segment (r-k-1) mod n.
inline std::vector<RingStep> ring_all_gather_steps(int rank, int n) {
  std::vector<RingStep> steps;
  for (int k = 0; k + 1 < n; ++k) steps.push_back({(rank - k + n) % n, (rank - k - 1 + 2 * n) % n});
  return steps;
}

}  // namespace tessera::dist
