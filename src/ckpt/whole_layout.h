// Checkpoints of a model split over tensor-parallel ranks, written in the whole model's layout:
// the very files an unsplit run writes (every parameter whole by name, the optimizer state in
// the whole model's flat order), so a checkpoint saved in any layout (tensor-parallel size,
// data-parallel size, ZeRO stage) resumes in any other. Saving gathers each rank's part of the
// state over the data-parallel ranks (ZeRO's shards) and then the tensor-parallel ones (each
// parameter's blocks); loading cuts every parameter's values and optimizer state back to this
// rank's blocks and shard.
#pragma once
#include <string>
#include <vector>

#include "ckpt/checkpoint.h"
#include "dist/communicator.h"
#include "dist/data_parallel.h"
#include "nn/module.h"
#include "nn/tensor_parallel.h"

namespace tessera::ckpt {

// How this rank's parameters sit in the whole model.
struct WholeModelLayout {
  dist::Communicator* tp = nullptr;     // tensor-parallel ranks (null: none)
  std::vector<nn::TensorShard> shards;  // per local parameter (empty: whole)
  dist::Communicator* pp = nullptr;     // pipeline ranks (null: none)
  // Every parameter name of the whole model in its parameters() order (empty: the local ones,
  // when there is no pipeline): the order of the whole flat layout.
  std::vector<std::string> order;
  Device device;  // where the communicators' tensors live
};

// The flat layout (FlatParameters' alignment) of whole parameters, in the given order.
std::vector<ParamSegment> whole_segments(const std::vector<std::pair<std::string, Shape>>& params,
                                         int64_t* numel);

// Collective over every rank of the job (the data-parallel ranks of dp.comm() and the
// tensor-parallel and pipeline ranks of `layout`). `trainer` comes from capture_trainer_state;
// its layout fields are rewritten for the whole layout. The rank with `writer` set (world rank
// 0) gets every file to write; the others get an empty snapshot.
Snapshot take_whole_snapshot(dist::DataParallel& dp, nn::Module& model,
                             const WholeModelLayout& layout, bool writer, TrainerState trainer,
                             const std::string& config_toml, const std::string& model_kind);

// Restores a split model's engine from a checkpoint in the whole layout (any checkpoint: an
// unsplit run's too). Errors name the file and what does not fit.
void load_whole_into(const VerifiedCheckpoint& ckpt, dist::DataParallel& dp,
                     const WholeModelLayout& layout);

}  // namespace tessera::ckpt
