// The device backends of a build with CUDA (nvcc, or the emulated device): core's built-in table
// for DeviceType::cuda is the CUDA backend's (src/cuda/backend.cu) with the NCCL communicator
// (src/dist/nccl_comm.h) as the communicator between its processes. A CPU-only build compiles
// host_only.cpp in this file's place (cmake/cuda.cmake).
//
// This folder sits below every layer it joins (docs/ARCHITECTURE.md): the one place that knows
// which backends the build has, so that core, the CUDA sources and dist need not know of each
// other. core/backend.cpp calls built_in_backend by name, which is what makes the linker keep
// this file (core/backend.h says why a self-registering object would not do).
#include <algorithm>
#include <memory>
#include <utility>

#include "core/backend.h"
#include "cuda/backend.h"
#include "dist/nccl_comm.h"

namespace tessera {
namespace {

std::shared_ptr<dist::Communicator> nccl(std::shared_ptr<dist::Communicator> bootstrap, int index,
                                         double peer_timeout_s) {
  dist::NcclOptions o;
  // parallel.timeout_s is the CPU heartbeat's (a dead process); NCCL's backstop is for a peer
  // that is alive but never joins, so it is never shorter than the default.
  o.timeout_s = std::max(o.timeout_s, peer_timeout_s);
  return std::make_shared<dist::NcclCommunicator>(std::move(bootstrap), index, o);
}

DeviceBackend cuda_with_nccl() {
  DeviceBackend b = cuda::backend_table();
  b.communicator_name = "nccl";
  b.make_communicator = nccl;
  return b;
}

}  // namespace

const DeviceBackend* built_in_backend(DeviceType t) {
  if (t != DeviceType::cuda) return nullptr;
  static const DeviceBackend table = cuda_with_nccl();
  return &table;
}

}  // namespace tessera
