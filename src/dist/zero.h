// ZeRO stages 1-3 (see data_parallel.h). The flat layout is FlatParameters' (each parameter at a
// 16-element boundary, in registration order), split into one contiguous shard per rank
// (ShardLayout). What each rank keeps between steps:
//               values            gradients                          optimizer state
//   stage 1     full (flat)       full (flat, views as .grad) + shard  shard
//   stage 2     full (flat)       shard (full .grad only in backward)  shard
//   stage 3     shard             shard                                shard
// Gradient buckets are reduce-scattered into the shard as soon as their last gradient is
// ready; under stages 2-3 a bucket's parameters drop their .grad at that moment, in every
// micro-batch (on several ranks: a later micro-batch's part is added to the shard once its
// reduce-scatter is complete), and at most kSendsInFlight send buffers are alive. Stage 1
// accumulates whole gradients over the micro-batches and reduces them after the last. Under stage 3
// the model's parameter tensors hold values only while gathered (gather_all(), a forward
// stage, or their unit's turn in visit_present()); outside those they point at a small
// placeholder, also once the engine is gone.
//
// Devices. Every buffer above (and ZeRO-3's gathered units) lives on the parameters' device:
// the CPU, or a GPU when the trainer moved the model there first. On a GPU, copies, the norm,
// the scaling and the optimizer's shard update are kernels queued on the current (compute)
// stream; NCCL's collectives order themselves after what that stream queued before them, and
// their wait() makes it wait for them (cuda/nccl_comm.h), so the host blocks only where a value
// comes back to it (the gradient norm, checksums, checkpoints). With one rank the
// LocalCommunicator's collectives are copies queued on that stream (local_comm.h): one code path
// serves every communicator.
#pragma once
#include <deque>

#include "dist/data_parallel.h"
#include "dist/grad_buckets.h"

namespace tessera::dist {

class Zero final : public DataParallel, public ParameterGather {
 public:
  Zero(nn::Module& model, Communicator& comm, const DataParallelOptions& opt, Tracer* tracer,
       const ParameterUnits& units);
  ~Zero() override;

  int zero_stage() const override { return stage_; }
  void zero_grad() override;
  void begin_micro_batch(bool last) override;
  void finish_backward() override;
  double clip_grad_norm(double max_norm, float grad_scale = 1.f) override;
  using DataParallel::step;
  void step(float lr, const StepGate* gate) override;
  void queue_squared_norm(double* dst) override;
  bool norm_counted_here() const override { return true; }
  ParameterGather* gather() override { return stage_ == 3 && layered_ ? this : nullptr; }
  void gather_all() override;
  void release_all() override;
  void visit_present(size_t count, const std::function<void(size_t)>& visit) override;
  int64_t param_numel() const override;
  MemoryReport memory() const override { return memory_; }
  uint64_t parameter_checksum() override;
  int64_t optimizer_steps() const override { return optimizer_->step_count(); }
  TrainingStateView training_state() override;
  void set_optimizer_steps(int64_t steps) override { optimizer_->set_step_count(steps); }

  // ParameterGather (stage 3).
  void enter(int stage) override;
  Tensor exit(int stage, const Tensor& x) override;

  const ShardLayout& shards() const { return shards_; }

 private:
  // Stage 3: a group of parameters gathered and freed together, as contiguous flat ranges.
  struct Range {
    int64_t begin, end;
    std::vector<size_t> params;
  };
  struct Unit {
    std::vector<Range> ranges;
    int refs = 0;
    std::vector<Tensor> buffers;     // one per range while gathered or in flight
    std::vector<WorkHandle> flight;  // gathers not yet waited for
    bool present = false;            // buffers hold the values and parameters point at them
  };

  void place_values();
  void place_grads();
  void build_units(const ParameterUnits& units);
  WorkHandle launch_bucket(const Bucket& b);
  void start_gather(int u);
  void acquire(int u);
  void release(int u);
  void release_everything();
  void finish_reductions();
  void complete_oldest_send(bool wait);
  void backward_boundary(int stage);
  Tensor shard_values() const;  // this rank's [sbegin_, send_) of the flat values

  int stage_;
  // Stages 2-3 on several ranks reduce every micro-batch's gradients into the shard, so that no
  // whole gradient outlives its micro-batch's backward; stage 1 accumulates them whole and
  // reduces once. (On one rank the shard is whole: accumulating in .grad saves the extra buffer
  // and keeps the sums in plain training's order, bit for bit.)
  bool reduce_each_micro_batch_;
  Device dev_;  // the parameters' device: where every buffer lives
  std::vector<Tensor> params_;
  std::vector<ParamSegment> segs_;
  int64_t numel_ = 0;
  ShardLayout shards_;
  int64_t sbegin_ = 0, send_ = 0;
  Tensor values_;  // stages 1-2: [numel]; stage 3: this rank's shard
  Tensor grads_;   // stage 1: [numel]; parameters' .grad are views of it
  std::vector<std::shared_ptr<TensorImpl>> grad_views_;
  Tensor shard_grads_;  // this rank's averaged gradient shard
  // With reduce_each_micro_batch_: the micro-batches of this step reduced so far.
  int micro_batches_reduced_ = 0;
  // Stages 2-3: the reduce-scatters whose send buffers may still be alive, oldest first; for a
  // later micro-batch each with its part of the shard, added to shard_grads_[at, ...) once
  // complete.
  struct Send {
    WorkHandle work;
    Tensor addend;
    int64_t at = 0;
  };
  static constexpr size_t kSendsInFlight = 2;
  std::deque<Send> sends_;
  std::unique_ptr<ShardedOptimizer> optimizer_;
  std::unique_ptr<BucketScheduler> scheduler_;
  MemoryReport memory_;
  int gather_track_ = 0;

  bool layered_ = false;  // the task calls enter/exit; otherwise one unit around each micro-batch
  std::vector<Unit> units_;
  std::vector<std::vector<int>> stages_;
  std::shared_ptr<Storage> released_;  // what a freed parameter points at (empty, on dev_)
  // Keeps the engine alive for autograd nodes that outlive a step's graph.
  std::shared_ptr<Zero*> alive_;
};

}  // namespace tessera::dist
