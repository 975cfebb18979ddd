// The communicator a launched process should use: one process gets the LocalCommunicator; a
// process that the launcher's environment (bootstrap.h) places in a job of several gets
//   mpirun / srun       the MPI backend, checked against what the launcher said;
//   torchrun-style      with gpu_job, the store communicator (store_comm.h: rank 0's TCP store
//                       at MASTER_ADDR:MASTER_PORT, the job token from job_token.h, mpi.timeout_s
//                       as the store's timeout), over which the trainer builds NCCL; without
//                       gpu_job an Error: CPU ranks need MPI.
#pragma once
#include <memory>
#include <string>

#include "dist/bootstrap.h"
#include "dist/communicator.h"
#include "dist/mpi_comm.h"

namespace tessera::dist {

std::shared_ptr<Communicator> communicator_for_launch(const LaunchInfo& launch,
                                                      const MpiOptions& mpi = {},
                                                      bool gpu_job = false);

// Lines for `tessera features`: the backends built in and what the environment says.
std::string features_report();

}  // namespace tessera::dist
