#include "train/device.h"

#include "core/backend.h"
#include "dist/bootstrap.h"

namespace tessera::train {

Placement place_training(const Config& cfg, std::shared_ptr<dist::Communicator> cpu_comm) {
  if (cfg.train.device == "cpu") return {Device::cpu(), std::move(cpu_comm)};
  // The planner's: its communicator (dist/meta_comm.h) is the one the trainer was given.
  if (cfg.train.device == "meta") return {Device::meta(), std::move(cpu_comm)};
  TS_CHECK(cfg.train.device == "cuda",
           "config: train.device = \"{}\": expected \"cpu\", \"cuda\" or \"meta\"", cfg.train.device);
  const DeviceBackend* backend = find_backend(DeviceType::cuda);
  TS_CHECK(backend,
           "config: train.device = \"cuda\" but this Tessera was built without the CUDA backend "
           "(configure with nvcc, or -DTESSERA_CUDA_EMULATION=ON, or set train.device = \"cpu\")");
  const int count = backend->device_count();
  // Every rank reaches the same verdict only if every node has GPUs; a rank without one fails
  // here and the others then fail in the NCCL set-up (its timeout), not hang forever.
  TS_CHECK(count > 0,
           "config: train.device = \"cuda\" but rank {} sees no CUDA device: {} (set "
           "train.device = \"cpu\", or run on a machine with a GPU)",
           cpu_comm->rank(), backend->unavailable_reason());
  // Ranks on a node spread over its GPUs.
  const dist::LaunchInfo launch = dist::detect_launch();
  const int gpu = launch.distributed() ? launch.local_rank % count : 0;
  backend->activate(gpu);
  const Device device = Device::cuda(gpu);
  if (cpu_comm->world_size() == 1) return {device, std::move(cpu_comm)};
  return {device, backend->make_communicator(std::move(cpu_comm), gpu, cfg.parallel.timeout_s)};
}

Tensor to_training_device(const Tensor& host, Device device) {
  if (device.is_cpu()) return host;
  return backend_for(device, "to_training_device").upload_async(host, device.index);
}

AllocatorStats training_memory(Device device) {
  return allocator_for(device).stats();
}

std::string describe_device(Device device) {
  if (const DeviceBackend* b = find_backend(device.type))
    return device.str() + " (" + b->describe(device.index) + ")";
  return device.str();
}

}  // namespace tessera::train
