#include "dist/world.h"

#include "core/backend.h"
#include "dist/local_comm.h"

namespace tessera::dist {

std::shared_ptr<Communicator> communicator_for_launch(const LaunchInfo& launch,
                                                      const MpiOptions& mpi) {
  if (!launch.distributed()) return std::make_shared<LocalCommunicator>();
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
  try {
    s += "launch: " + detect_launch().describe() + "\n";
  } catch (const std::exception& e) {
    s += std::string("launch: invalid environment: ") + e.what() + "\n";
  }
  return s;
}

}  // namespace tessera::dist
