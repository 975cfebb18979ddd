// The communicator a launched process should use: one process gets the LocalCommunicator; a
// process that the launcher's environment (bootstrap.h) places in a job of several gets the
// MPI backend, checked against what the launcher said.
#pragma once
#include <memory>
#include <string>

#include "dist/bootstrap.h"
#include "dist/communicator.h"
#include "dist/mpi_comm.h"

namespace tessera::dist {

std::shared_ptr<Communicator> communicator_for_launch(const LaunchInfo& launch,
                                                      const MpiOptions& mpi = {});

// Lines for `tessera features`: the backends built in and what the environment says.
std::string features_report();

}  // namespace tessera::dist
