// Where this process sits in a distributed job, read from the launcher's environment:
//   mpirun (Open MPI)  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   torchrun-style     RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
//   Slurm srun         SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
// checked in that order: mpirun inside a Slurm allocation, or torchrun inside one, sets the
// Slurm variables of the allocation too, and the more specific launcher wins. No variables:
// one process (rank 0 of 1). docs/DISTRIBUTED.md shows the launch lines.
#pragma once
#include <functional>
#include <optional>
#include <string>

namespace tessera::dist {

struct LaunchInfo {
  std::string launcher = "none";  // "none", "mpirun", "torchrun", "slurm"
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;       // rank among the processes on this node (picks a GPU)
  std::string master_addr;  // torchrun-style rendezvous (for backends that need one)
  int master_port = 0;

  bool distributed() const { return world_size > 1; }
  // "rank 1 of 4 (local 1), from mpirun"
  std::string describe() const;
};

// Looks up an environment variable; the default reads the process environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
std::optional<std::string> process_env(const std::string& name);

// Reads the launcher's variables. Throws Error naming the variable when one is malformed or out
// of range (a rank outside [0, world), a missing partner variable, a non-number).
LaunchInfo detect_launch(const EnvLookup& env = process_env);

}  // namespace tessera::dist
