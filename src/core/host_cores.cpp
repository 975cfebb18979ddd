#include "core/host_cores.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>

namespace tessera {

namespace {
long online_cores() {
  return std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
}
long allowed_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : online_cores();
}
}  // namespace

int cores_per_rank(int ranks_on_node) {
  const long share = std::max(1L, online_cores() / std::max(1, ranks_on_node));
  return int(std::max(1L, std::min(allowed_cores(), share)));
}

int usable_cores() {
  return int(std::max(1L, std::min(allowed_cores(), online_cores())));
}

bool has_spare_core(int ranks_on_node, int compute_threads) {
  return cores_per_rank(ranks_on_node) > compute_threads;
}

}  // namespace tessera
