// The NCCL library as linked into Tessera. The NCCL Communicator backend (unique-id exchange
// over the MPI / rendezvous bootstrap, a communication stream ordered against compute with
// events) is not written yet; see docs/CUDA.md. This proves the library links and reports its
// version, which needs no device.
#pragma once
#include <string>

namespace tessera::cuda {

// NCCL's version code, e.g. 22809 for 2.28.9.
int nccl_version();
// "2.28.9"
std::string nccl_version_string();

}  // namespace tessera::cuda
