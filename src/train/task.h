// A Task binds a model to its data: it draws batches, computes a micro-batch's loss and
// evaluates. The trainer (trainer.h) owns the loop, optimizer, logging and files; tasks keep
// what differs between a language model and an image classifier.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/loader.h"
#include "dist/data_parallel.h"
#include "nn/module.h"
#include "nn/tensor_parallel.h"
#include "train/config.h"
#include "train/eval_share.h"

namespace tessera::train {

class Task {
 public:
  virtual ~Task() = default;
  virtual nn::Module& model() = 0;
  // Makes batches and evaluation run on `device`. The model's parameters are the trainer's to
  // move (Module::to, or the ZeRO engine: under stage 3 only this rank's shard).
  virtual void set_device(Device device) = 0;
  // Fetches the next global batch (this rank's rows: see make_task).
  virtual void next_batch() = 0;
  // The samples of this rank's rows of the current batch (data::TokenBatch::sample_ids): what
  // sample accounting counts (sample_account.h).
  virtual const std::vector<int64_t>& sample_ids() const = 0;
  // Loss of micro-batch i of n of the current batch (rows split evenly), as a scalar with
  // autograd attached. The trainer scales it by 1/n before backward.
  virtual Tensor micro_loss(int64_t i, int64_t n) = 0;
  // Tokens (GPT) or samples (classifiers) per global batch, and the unit for rates.
  virtual int64_t items_per_step() const = 0;
  virtual const char* rate_key() const = 0;   // "tokens_per_s" / "samples_per_s"
  virtual const char* rate_unit() const = 0;  // "tok/s" / "samples/s"
  // Model FLOPs per step (forward + backward), 0 when unknown.
  virtual double flops_per_step() const { return 0; }
  // Evaluation metrics, e.g. {"val_loss": 1.52} or {"test_accuracy": 0.91, "test_loss": 0.3},
  // the batches shared by the data-parallel ranks (eval_share.h): the same on every rank.
  virtual nlohmann::json evaluate(const EvalShare& share) = 0;
  // A short text sample from a language model ("" for classifiers).
  virtual std::string sample(int64_t /*tokens*/) { return ""; }

  // How each parameter is split over the tensor-parallel group, in parameters() order (empty:
  // the model is whole on every rank).
  virtual std::vector<nn::TensorShard> parameter_shards() const { return {}; }

  // Pipeline parallelism (TaskPlacement::pipeline): the number of stages (0: not split), stage
  // s's forward on micro-batch i of n of the current batch (from the previous stage's output
  // x; on the last stage the loss), and the shape of a stage's output for a micro-batch.
  virtual int pipeline_stages() const { return 0; }
  virtual Tensor stage_forward(int /*stage*/, int64_t /*i*/, int64_t /*n*/, const Tensor& /*x*/) {
    return Tensor();
  }
  virtual Shape stage_output_shape(int64_t /*n*/) const { return Shape{}; }
  // A tied embedding split over the first and last stages (nn::Decoder::tied_embedding): the
  // copy on this rank, whose gradient is summed with the other stage's every step, or nullptr;
  // tied_stage_copy(): the same, only where it is the last stage's copy without the first.
  virtual const Tensor* tied_embedding() const { return nullptr; }
  // The whole model's parameter count (0: unknown; the rank's own then).
  virtual int64_t whole_parameter_count() const { return 0; }
  // Every parameter name of the whole model in its order (a pipelined rank holds only some).
  virtual std::vector<std::string> whole_parameter_order() const { return {}; }
  virtual const Tensor* tied_stage_copy() const { return nullptr; }

  // ZeRO-3: the parameter units and forward stages of the model (see dist/data_parallel.h);
  // empty when the task has no layered forward (the engine then gathers the whole model
  // around each micro-batch).
  virtual dist::ParameterUnits parameter_units() { return {}; }
  // ZeRO-3: from now on micro_loss() runs its forward stage by stage through `gather`
  // (nullptr: the plain forward).
  virtual void set_parameter_gather(dist::ParameterGather* /*gather*/) {}

  // Checkpoints. data_state(): where the training data stream stands, i.e. the batcher's state
  // after the last batch next_batch() returned (the same on every rank). set_data_state() moves
  // the stream there and restarts the prefetcher from it, so nothing it drew ahead is lost or
  // repeated.
  virtual data::SamplerState data_state() const = 0;
  virtual void set_data_state(const data::SamplerState& state) = 0;
  // The random streams the task draws from while training (dropout, text samples), by name.
  virtual std::vector<std::pair<std::string, Generator*>> generators() { return {}; }
};

// Where a task's process sits: data-parallel rank r of N draws rows
// data::rank_rows(batch_size, r, N) of every global batch; with a tensor-parallel group, the
// model is split over it (nn::Decoder::shard) and every rank of the group draws the same rows.
struct TaskPlacement {
  int rank = 0;
  int world_size = 1;
  nn::TensorParallelGroup* tensor_parallel = nullptr;
  bool sequence_parallel = false;  // with tensor_parallel (parallel.sequence_parallel)
  // Pipeline parallelism: the ranks of this model replica's stages (null: none). The model is
  // cut into pipeline->world_size() x virtual_stages stages of consecutive blocks; this rank
  // keeps stages s with s % world_size == its rank.
  dist::Communicator* pipeline = nullptr;
  int virtual_stages = 1;
  // Context parallelism: the ranks sharing each sequence (nn::ContextShard); every rank of the
  // group draws the same rows and keeps its two chunks of each.
  nn::TensorParallelGroup* context_parallel = nullptr;
};

// Builds the task the config describes: loads the data (errors name the file and key) and
// initialises the model from the config's seed.
std::unique_ptr<Task> make_task(const Config& cfg, TaskPlacement placement = {});

}  // namespace tessera::train
