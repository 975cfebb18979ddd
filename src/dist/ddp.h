// ZeRO stage 0, distributed data parallel: every rank holds the whole model, its gradients (in
// FlatParameters' flat buffer) and the optimizer state; gradient buckets are averaged with
// all-reduces that the gradient-ready hooks start during the backward pass. On one rank there
// are no hooks and no communication: exactly the single-process trainer.
#pragma once
#include "dist/data_parallel.h"
#include "dist/grad_buckets.h"
#include "optim/optimizer.h"

namespace tessera::dist {

class DDP final : public DataParallel {
 public:
  DDP(nn::Module& model, Communicator& comm, const DataParallelOptions& opt, Tracer* tracer);

  int zero_stage() const override { return 0; }
  void zero_grad() override;
  void begin_micro_batch(bool last) override;
  void finish_backward() override;
  double clip_grad_norm(double max_norm, float grad_scale = 1.f) override;
  using DataParallel::step;
  void step(float lr, const StepGate* gate) override;
  void queue_squared_norm(double* dst) override;
  bool norm_counted_here() const override { return comm_.rank() == 0; }
  int64_t param_numel() const override { return flat_->param_numel(); }
  MemoryReport memory() const override { return memory_; }
  uint64_t parameter_checksum() override;
  int64_t optimizer_steps() const override { return optimizer_->step_count(); }
  TrainingStateView training_state() override;
  void set_optimizer_steps(int64_t steps) override;

  FlatParameters& flat() { return *flat_; }
  Optimizer& optimizer() { return *optimizer_; }
  const BucketScheduler* scheduler() const { return scheduler_.get(); }

 private:
  MemoryReport memory_;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<BucketScheduler> scheduler_;  // null on one rank
};

// The optim/ optimizer the options describe, over a whole FlatParameters.
std::unique_ptr<Optimizer> make_flat_optimizer(FlatParameters& flat,
                                               const ShardedOptimizerOptions& opt);

}  // namespace tessera::dist
