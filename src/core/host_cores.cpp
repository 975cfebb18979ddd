#include "core/host_cores.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>

namespace tessera {

int cores_per_rank(int ranks_on_node) {
  const long online = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  cpu_set_t set;
  CPU_ZERO(&set);
  const long allowed = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : online;
  const long share = std::max(1L, online / std::max(1, ranks_on_node));
  return int(std::max(1L, std::min(allowed, share)));
}

bool has_spare_core(int ranks_on_node, int compute_threads) {
  return cores_per_rank(ranks_on_node) > compute_threads;
}

}  // namespace tessera
