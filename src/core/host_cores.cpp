#include "core/host_cores.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

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

double host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  double bytes = pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
  // cgroup v2: "max" or a byte count (/proc/self/cgroup's "0::/path" names the group).
  std::ifstream groups("/proc/self/cgroup");
  for (std::string line; std::getline(groups, line);) {
    if (line.rfind("0::", 0) != 0) continue;
    std::ifstream limit("/sys/fs/cgroup" + line.substr(3) + "/memory.max");
    std::string value;
    if (limit >> value && !value.empty() &&
        value.find_first_not_of("0123456789") == std::string::npos) {
      const double v = std::stod(value);
      if (v > 0 && (bytes <= 0 || v < bytes)) bytes = v;
    }
  }
  return bytes;
}

int usable_cores() {
  return int(std::max(1L, std::min(allowed_cores(), online_cores())));
}

bool has_spare_core(int ranks_on_node, int compute_threads) {
  return cores_per_rank(ranks_on_node) > compute_threads;
}

}  // namespace tessera
