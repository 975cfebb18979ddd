// The NCCL library as linked into Tessera: its version, which needs no device. The
// Communicator backend on top of it is nccl_comm.h (the unique-id exchange: nccl_id.h).
#pragma once
#include <string>

namespace tessera::cuda {

// NCCL's version code, e.g. 22809 for 2.28.9.
int nccl_version();
// "2.28.9"
std::string nccl_version_string();

}  // namespace tessera::cuda
