#include "train/device.h"

#include <algorithm>

#include "dist/bootstrap.h"
#if TESSERA_HAVE_CUDA
#include "cuda/copy.h"
#include "cuda/device.h"
#include "cuda/nccl_comm.h"
#endif

namespace tessera::train {

Placement place_training(const Config& cfg, std::shared_ptr<dist::Communicator> cpu_comm) {
  if (cfg.train.device == "cpu") return {Device::cpu(), std::move(cpu_comm)};
  TS_CHECK(cfg.train.device == "cuda",
           "config: train.device = \"{}\": expected \"cpu\" or \"cuda\"", cfg.train.device);
#if TESSERA_HAVE_CUDA
  const cuda::DeviceProbe& probe = cuda::probe_devices();
  // Every rank reaches the same verdict only if every node has GPUs; a rank without one fails
  // here and the others then fail in the NCCL set-up (its timeout), not hang forever.
  TS_CHECK(probe.count > 0,
           "config: train.device = \"cuda\" but rank {} sees no CUDA device: {} (set "
           "train.device = \"cpu\", or run on a machine with a GPU)",
           cpu_comm->rank(), probe.reason);
  const dist::LaunchInfo launch = dist::detect_launch();
  const int gpu = launch.distributed() ? cuda::device_for_launch(launch) : 0;
  cuda::init(gpu);
  const Device device = Device::cuda(gpu);
  if (cpu_comm->world_size() == 1) return {device, std::move(cpu_comm)};
  cuda::NcclOptions o;
  // parallel.timeout_s is the CPU heartbeat's (a dead process); NCCL's backstop is for a peer
  // that is alive but never joins, so it is never shorter than the default.
  o.timeout_s = std::max(o.timeout_s, cfg.parallel.timeout_s);
  auto nccl = std::make_shared<cuda::NcclCommunicator>(std::move(cpu_comm), gpu, o);
  return {device, std::move(nccl)};
#else
  fail(
      "config: train.device = \"cuda\" but this Tessera was built without the CUDA backend "
      "(configure with -DTESSERA_CUDA=ON on a machine with the CUDA toolkit, or set "
      "train.device = \"cpu\")");
#endif
}

Tensor to_training_device(const Tensor& host, Device device) {
  if (device.is_cpu()) return host;
#if TESSERA_HAVE_CUDA
  return cuda::upload_async(host, device.index);
#else
  return host.to(device);  // an Error naming the missing backend
#endif
}

AllocatorStats training_memory(Device device) {
  return allocator_for(device).stats();
}

std::string describe_device(Device device) {
#if TESSERA_HAVE_CUDA
  if (!device.is_cpu()) return device.str() + " (" + cuda::device_summary(device.index) + ")";
#endif
  return device.str();
}

}  // namespace tessera::train
