// Where a training run executes: train.device picks the CPU or a GPU; on GPUs the ranks talk
// over NCCL and batches are uploaded from pinned memory without stalling the host.
#pragma once
#include <memory>
#include <string>

#include "core/allocator.h"
#include "core/tensor.h"
#include "dist/communicator.h"
#include "train/config.h"

namespace tessera::train {

struct Placement {
  Device device;                             // where parameters, activations and batches live
  std::shared_ptr<dist::Communicator> comm;  // NCCL on GPUs with several ranks; else `cpu_comm`
};

// train.device = "cpu": {cpu, cpu_comm}. "cuda": GPU local_rank % count (the launcher's local
// rank; 0 for one process), and with several ranks an NCCL communicator bootstrapped over
// cpu_comm (collective: every rank calls it). Errors name train.device and say why a GPU cannot
// be used (a build without CUDA, no device and the runtime's reason).
Placement place_training(const Config& cfg, std::shared_ptr<dist::Communicator> cpu_comm);

// A batch tensor on the training device: the tensor itself on the CPU; on a GPU an
// asynchronous copy through a pinned staging buffer (cuda::upload_async).
Tensor to_training_device(const Tensor& host, Device device);

// The tensor allocator's statistics on the training device (peak bytes for the summary).
AllocatorStats training_memory(Device device);

// "cpu", or "cuda:0 (NVIDIA H200, 139.8 GiB, sm_90)".
std::string describe_device(Device device);

}  // namespace tessera::train
