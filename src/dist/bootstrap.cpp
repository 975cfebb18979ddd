#include "dist/bootstrap.h"

#include <charconv>
#include <cstdlib>

#include "core/error.h"

namespace tessera::dist {
namespace {

int parse_int(const std::string& name, const std::string& value, int lo) {
  int v = 0;
  const char* end = value.data() + value.size();
  auto [ptr, ec] = std::from_chars(value.data(), end, v);
  TS_CHECK(ec == std::errc() && ptr == end && !value.empty(),
           "launch environment: {}={} is not an integer", name, value);
  TS_CHECK(v >= lo, "launch environment: {}={} must be >= {}", name, value, lo);
  return v;
}

struct Names {
  const char* launcher;
  const char* rank;
  const char* size;
  const char* local;
};

// Reads one launcher's variables when its rank variable is set.
std::optional<LaunchInfo> read(const EnvLookup& env, const Names& n) {
  std::optional<std::string> rank = env(n.rank), size = env(n.size), local = env(n.local);
  if (!rank && !size) return std::nullopt;
  TS_CHECK(rank && size, "launch environment: {} is set but {} is not (launcher '{}')",
           rank ? n.rank : n.size, rank ? n.size : n.rank, n.launcher);
  LaunchInfo info;
  info.launcher = n.launcher;
  info.rank = parse_int(n.rank, *rank, 0);
  info.world_size = parse_int(n.size, *size, 1);
  TS_CHECK(info.rank < info.world_size, "launch environment: {}={} is outside [0, {}={})", n.rank,
           info.rank, n.size, info.world_size);
  info.local_rank = local ? parse_int(n.local, *local, 0) : info.rank;
  TS_CHECK(info.local_rank < info.world_size, "launch environment: {}={} is not below {}={}",
           n.local, info.local_rank, n.size, info.world_size);
  return info;
}

}  // namespace

std::string LaunchInfo::describe() const {
  if (launcher == "none") return "one process (no launcher)";
  return fmt::format("rank {} of {} (local {}), from {}", rank, world_size, local_rank, launcher);
}

std::optional<std::string> process_env(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (!v) return std::nullopt;
  return std::string(v);
}

LaunchInfo detect_launch(const EnvLookup& env) {
  if (auto i = read(env, {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                          "OMPI_COMM_WORLD_LOCAL_RANK"}))
    return *i;
  if (auto i = read(env, {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"})) {
    i->master_addr = env("MASTER_ADDR").value_or("");
    if (auto port = env("MASTER_PORT")) {
      i->master_port = parse_int("MASTER_PORT", *port, 1);
      TS_CHECK(i->master_port <= 65535, "launch environment: MASTER_PORT={} is not a TCP port",
               *port);
    }
    TS_CHECK(!i->distributed() || !i->master_addr.empty(),
             "launch environment: WORLD_SIZE={} but MASTER_ADDR is not set (torchrun-style "
             "launches need MASTER_ADDR and MASTER_PORT)",
             i->world_size);
    return *i;
  }
  if (auto i = read(env, {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"})) return *i;
  return LaunchInfo{};
}

}  // namespace tessera::dist
