#include "dist/world.h"

#include <limits>

#include "core/backend.h"
#include "dist/job_token.h"
#include "dist/local_comm.h"
#include "dist/store_comm.h"

namespace tessera::dist {

std::shared_ptr<Communicator> communicator_for_launch(const LaunchInfo& launch,
                                                      const MpiOptions& mpi, bool gpu_job) {
  if (!launch.distributed()) return std::make_shared<LocalCommunicator>();
  if (launch.launcher == "torchrun") {
    TS_CHECK(gpu_job,
             "this process is {}: a torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR) is for "
             "GPU jobs (train.device = \"cuda\": NCCL, started through rank 0's TCP store); CPU "
             "ranks need MPI: start them with mpirun or srun --mpi=pmix",
             launch.describe());
    TS_CHECK(launch.master_port > 0,
             "this process is {}: MASTER_PORT is not set (rank 0's store listens on "
             "MASTER_ADDR:MASTER_PORT)",
             launch.describe());
    StoreOptions opt;
    opt.host = launch.master_addr;
    opt.port = launch.master_port;
    opt.token = load_job_token();
    opt.world_size = launch.world_size;
    opt.timeout_s = mpi.timeout_s;
    // A rank that beats but does not reach a host collective (the trainer has one every step)
    // for this long is stuck: named, as the MPI backend's stuck-rank check does.
    opt.collective_timeout_s =
        mpi.stuck_timeout_s > 0 ? mpi.stuck_timeout_s : std::numeric_limits<double>::infinity();
    return std::make_shared<StoreCommunicator>(std::move(opt), launch.rank);
  }
  TS_CHECK(mpi_built_in(),
           "this process is {}, but distributed training needs the MPI backend, which is not "
           "built in: install openmpi-bin libopenmpi-dev and rebuild with -DTESSERA_WITH_MPI=ON",
           launch.describe());
  std::shared_ptr<Communicator> c = mpi_world(mpi);
  TS_CHECK(
      c->world_size() == launch.world_size && c->rank() == launch.rank,
      "the launcher ({}) says rank {} of {}, but MPI sees rank {} of {}: the MPI backend "
      "needs processes started by mpirun or by srun --mpi=pmix; torchrun-style launches "
      "(RANK, WORLD_SIZE, MASTER_ADDR) cannot join an MPI job: start the ranks with mpirun or srun",
      launch.launcher, launch.rank, launch.world_size, c->rank(), c->world_size());
  return c;
}

std::string features_report() {
  std::string s;
  s += "backend: cpu (oneDNN + OpenMP)\n";
  s += mpi_feature_line() + "\n";
  // The device communicator comes with the device backend (NCCL with CUDA).
  if (const DeviceBackend* cuda = find_backend(DeviceType::cuda))
    s += fmt::format(
        "{}: built in; training uses it with train.device = \"cuda\" and several ranks\n",
        cuda->communicator_name);
  else
    s += "nccl: not built in (this build has no CUDA backend)\n";
  s += "store: torchrun-style launch of GPU jobs (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, no "
       "MPI): NCCL's unique id and the start-up checks go through rank 0's TCP store, bound to "
       "MASTER_ADDR, every client and message authenticated with HMAC-SHA256 keyed by the job "
       "token (";
  s += process_env(kJobTokenEnv) ? std::string(kJobTokenEnv) + " is set"
       : process_env(kJobTokenFileEnv)
           ? std::string(kJobTokenFileEnv) + " is set"
           : std::string("not set: ") + kJobTokenEnv + " or " + kJobTokenFileEnv;
  s += ")\n";
  try {
    s += "launch: " + detect_launch().describe() + "\n";
  } catch (const std::exception& e) {
    s += std::string("launch: invalid environment: ") + e.what() + "\n";
  }
  return s;
}

}  // namespace tessera::dist
