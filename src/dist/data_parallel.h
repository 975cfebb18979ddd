// Data-parallel training: every rank runs the same model on its own rows of each global batch,
// and a DataParallel engine keeps the ranks' models identical. One engine per ZeRO stage
// (parallel.zero_stage):
//   0  DDP (ddp.h): parameters, gradients and optimizer state replicated; gradients averaged by
//      bucketed all-reduces that start during the backward pass.
//   1  optimizer state sharded: gradients reduce-scattered (bucketed, during backward) into
//      this rank's shard, the optimizer steps the shard, parameters are all-gathered.
//   2  + gradients sharded: a parameter's full gradient lives only until its bucket is sent.
//   3  + parameters sharded: each unit of parameters (a transformer block) is all-gathered just
//      before it is used, forward and backward, and freed after; the next unit's gather is
//      started ahead (prefetch).
// On one rank every engine reduces to plain training; stage 0 on one rank is exactly the
// single-process trainer (FlatParameters + the optim/ optimizer, no communication).
//
// The trainer's loop with an engine:
//   dp.zero_grad();
//   for each micro-batch i of n:  dp.begin_micro_batch(i == n - 1);  loss_i.backward();
//   dp.finish_backward();                      // all gradient communication done
//   norm = dp.clip_grad_norm(max_norm, scale); // global norm (over all ranks' shards)
//   dp.step(lr);                               // optimizer (+ parameter all-gather)
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/sharded_optimizer.h"
#include "dist/trace.h"
#include "nn/module.h"
#include "nn/stages.h"

namespace tessera::dist {

struct DataParallelOptions {
  int zero_stage = 0;
  double bucket_mb = 25;  // gradient bucket size in MiB
  ShardedOptimizerOptions optimizer;
  // Tensor and pipeline parallelism: the ranks holding the other parts of this rank's model
  // (null: none). The global gradient norm then sums over them too; `counted` (per parameter,
  // in the model's parameters() order; empty: all) says which parameters this rank counts, so
  // that one held whole on several of them (a norm's weight under tensor parallelism, a tied
  // embedding on the first and last pipeline stages) counts once.
  Communicator* model_parallel = nullptr;
  std::vector<bool> counted;
  // ZeRO: where the engine keeps its buffers, when the parameters are still on the host (unset:
  // the parameters' device). The engine copies from them only what this rank keeps (under
  // stage 3 its shard) and moves the parameters there, so a model too large for one device's
  // memory never has to be on one whole. DDP needs the parameters on their device already.
  std::optional<Device> device;
};

// Bytes this rank holds for each kind of training state, each measured as the change in the
// parameters' device allocator's bytes in use across the code that creates it (so rounding to
// size classes and any stray allocation count; DDP on a GPU counts its flat buffers' bytes).
struct MemoryReport {
  int64_t param_bytes = 0;      // parameter values kept between steps
  int64_t grad_bytes = 0;       // gradient buffers kept between steps
  int64_t optimizer_bytes = 0;  // optimizer state
};

// ZeRO-3: how a model's forward tells the engine which parameters it is about to use. The model
// declares its units and stages (nn/stages.h); its forward then runs
//   for k in stages:  gather.enter(k);  x = ...stage k...;  x = gather.exit(k, x);
// enter() makes the stage's parameters usable (waiting for their all-gather, and starting the
// next stage's). exit() frees them and puts a marker on x whose backward runs when stage k+1's
// backward is done: it frees stage k+1's parameters and gathers stage k's again (prefetching
// stage k-1's) before stage k's backward needs them.
using ParameterUnits = nn::ParameterUnits;
using ParameterGather = nn::StageHooks;

// Checkpoints: this rank's share of the training state, as views of the live buffers (no copy:
// clone them to snapshot, write into them to restore). Every engine lays parameters out alike
// (FlatParameters' order and alignment), so a state saved under one ZeRO stage and world size
// can be re-cut for any other.
struct TrainingStateView {
  std::vector<ParamSegment> segments;  // every parameter's place in the flat layout
  int64_t numel = 0;                   // flat layout length, padding included
  // Flat values [values_begin, values_begin + values.numel()) held here: all of them under
  // stages 0-2, this rank's shard under stage 3.
  int64_t values_begin = 0;
  Tensor values;
  std::string optimizer;  // "adamw" | "sgd"
  int64_t optimizer_steps = 0;
  // Optimizer state for flat elements [state_begin, state_end): the whole layout under stage 0
  // (identical on every rank), this rank's shard under stages 1-3. Buffers in the optimizer's
  // order ("exp_avg", "exp_avg_sq" / "momentum"), each f32 [state_end - state_begin].
  int64_t state_begin = 0, state_end = 0;
  std::vector<std::pair<std::string, Tensor>> state;
};

class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int zero_stage() const = 0;
  Communicator& comm() const { return comm_; }

  virtual void zero_grad() = 0;
  // Before each micro-batch's backward; gradients are communicated only when last is true.
  virtual void begin_micro_batch(bool last) = 0;
  // Waits for every gradient bucket (starting any that no gradient-ready hook started).
  virtual void finish_backward() = 0;
  // The global gradient L2 norm; when max_norm > 0 and the norm exceeds it, gradients are
  // scaled to max_norm (a non-finite norm scales nothing, as clip_grad_norm). grad_scale: the
  // gradients hold grad_scale x the true ones (fp16 loss scaling); the norm returned is the
  // true one and, when finite, the gradients are divided by grad_scale in the same pass.
  virtual double clip_grad_norm(double max_norm, float grad_scale = 1.f) = 0;
  void step(float lr) { step(lr, nullptr); }
  // With a gate: the update as the device decided it (Optimizer::step's gate).
  virtual void step(float lr, const StepGate* gate) = 0;

  // A step decided on the device (core/backend.h's StepGate; train/step_decider.h): this rank's
  // share of the squared gradient norm (of the gradients as they are, loss scale included;
  // with model-parallel ranks, of what this rank counts), added to *dst in device memory
  // without waiting.
  virtual void queue_squared_norm(double* dst) = 0;
  // Whether this rank's share is part of the model's norm. Summing the shares of the ranks
  // where it is gives the norm the host forms: under ZeRO every rank's shard; replicated
  // gradients once, on the first data-parallel rank.
  virtual bool norm_counted_here() const = 0;

  // ZeRO-3's hooks for the forward (nullptr for stages 0-2: parameters are always present).
  virtual ParameterGather* gather() { return nullptr; }
  // Makes every parameter usable (ZeRO-3 all-gathers them; a no-op otherwise), for what has no
  // staged forward (sampling, the classifiers' evaluation, split layouts' saving);
  // release_all() undoes it, and frees what a staged forward left gathered. Collective under
  // ZeRO-3.
  virtual void gather_all() {}
  virtual void release_all() {}
  // Calls visit(i) for each parameter i of the model (its parameters() order; `count` of them)
  // while that parameter's values are present. ZeRO-3 gathers one unit at a time around its
  // parameters' visits (prefetching the next), so saving weights never holds the whole model on
  // the device; the other stages hold every parameter already. Collective under ZeRO-3.
  virtual void visit_present(size_t count, const std::function<void(size_t)>& visit);

  // Parameter elements (padding excluded) and the flat buffer length (padding included).
  virtual int64_t param_numel() const = 0;
  virtual MemoryReport memory() const = 0;
  // A checksum of this rank's view of every parameter value (bit pattern, FNV-1a), to check
  // that ranks hold identical models. Collective under ZeRO-3 (gathers the parameters).
  virtual uint64_t parameter_checksum() = 0;
  virtual int64_t optimizer_steps() const = 0;

  // Checkpoints (see TrainingStateView); restoring writes into the views and sets the count of
  // optimizer updates (AdamW's bias correction depends on it).
  virtual TrainingStateView training_state() = 0;
  virtual void set_optimizer_steps(int64_t steps) = 0;

 protected:
  DataParallel(Communicator& comm, Tracer* tracer, const DataParallelOptions& opt);
  // The squared L2 norm of `grads`, flat elements [begin, begin + grads.numel()) of the layout
  // `segments`, that this rank counts towards the model's norm (see
  // DataParallelOptions::model_parallel); summed in f64.
  double counted_sum_squares(const Tensor& grads, int64_t begin,
                             const std::vector<ParamSegment>& segments) const;
  // The same sum added to *dst on grads' device, without waiting (same ranges, same order).
  void queue_counted_sum_squares(const Tensor& grads, int64_t begin,
                                 const std::vector<ParamSegment>& segments, double* dst) const;
  // The ranges [p, p + n) of grads that this rank counts, in layout order.
  void for_each_counted_range(const Tensor& grads, int64_t begin,
                              const std::vector<ParamSegment>& segments,
                              const std::function<void(const float* p, int64_t n)>& f) const;
  Communicator& comm_;
  Tracer* tracer_;
  Communicator* model_parallel_ = nullptr;
  std::vector<bool> counted_;
};

// Builds the engine for opt.zero_stage. ZeRO-3 needs `units` (see ParameterUnits); stages 0-2
// ignore them. The model's parameters are moved into the engine's flat buffers (their
// TensorImpls re-pointed), so handles the model holds stay valid.
std::unique_ptr<DataParallel> make_data_parallel(nn::Module& model, Communicator& comm,
                                                 const DataParallelOptions& opt,
                                                 Tracer* tracer = nullptr,
                                                 const ParameterUnits& units = {});

// Host copies of the model's parameters, by name, on the ranks where `keep` (the others get
// none): what a checkpoint or the final weights file saves. Collective under ZeRO-3, which
// gathers them unit by unit (DataParallel::visit_present).
nn::NamedTensors host_parameters(DataParallel& dp, const nn::Module& model, bool keep);

// FNV-1a over the bytes of n floats (bit-exact comparison of parameter copies).
uint64_t fnv1a(const float* p, int64_t n, uint64_t h = 1469598103934665603ull);

}  // namespace tessera::dist
