#include "train/step_decider.h"

#include <cstddef>
#include <cstring>

#include "core/error.h"

namespace tessera::train {

namespace {

constexpr int64_t kSumsFloats = sizeof(RankStepSums) / sizeof(float);
static_assert(sizeof(RankStepSums) % sizeof(float) == 0);
static_assert(sizeof(StepRecord) % sizeof(int64_t) == 0);

// Device storage for `bytes` (i64 elements: 8-byte aligned for the f64 and i64 fields).
Tensor device_bytes(size_t bytes, Device d) {
  return Tensor::empty({int64_t((bytes + 7) / 8)}, DType::i64, d);
}

}  // namespace

StepDecider::StepDecider(Device device, dist::Communicator& comm, const StepDeciderOptions& opt,
                         const LossScalerState& scaler, int64_t optimizer_steps)
    : device_(device),
      comm_(comm),
      opt_(opt),
      backend_(backend_for(device, "a step decided on the device")) {
  TS_CHECK(opt_.capacity >= 1 && opt_.micro_batches >= 1,
           "StepDecider: capacity {} and micro-batches {} must be >= 1", opt_.capacity,
           opt_.micro_batches);
  StepGate g;
  g.loss_scale = scaler.scale;
  g.clean_steps = scaler.clean_steps, g.skipped_steps = scaler.skipped_steps;
  g.applied = optimizer_steps;
  g.seed = g.loss_scale / float(opt_.micro_batches);
  gate_ = device_bytes(sizeof(StepGate), device_);
  backend_.copy_from_host(gate_.raw_data(), &g, sizeof g);
  const int world = comm_.world_size(), rank = comm_.rank();
  all_ = Tensor::empty({kSumsFloats * world}, DType::f32, device_);
  mine_ = all_.slice_rows(kSumsFloats * rank, kSumsFloats * (rank + 1));
  RankStepSums mine;  // begin_step zeroes the sums, never `counted` and `loss_counted`
  mine.counted = opt_.counts_norm ? 1.0 : 0.0;
  mine.loss_counted = opt_.counts_loss ? 1.0 : 0.0;
  backend_.copy_from_host(mine_.raw_data(), &mine, sizeof mine);
  records_ = device_bytes(sizeof(StepRecord) * size_t(opt_.capacity), device_);
}

void StepDecider::begin_step() {
  backend_.memset(mine_.raw_data(), 0, offsetof(RankStepSums, counted));
}

void StepDecider::add_loss(const Tensor& loss) {
  TS_CHECK(loss.dtype() == DType::f32 && loss.numel() == 1 && loss.device() == device_,
           "StepDecider: a micro-batch's loss must be one f32 on {}, got {} on {}", device_.str(),
           loss.desc(), loss.device().str());
  auto* sums = static_cast<RankStepSums*>(mine_.raw_data());
  backend_.add_loss(static_cast<const float*>(loss.raw_data()), &sums->loss,
                    double(opt_.micro_batches));
}

Tensor StepDecider::backward_seed(const Tensor& loss) const {
  TS_CHECK(loss.dtype() == DType::f32 && loss.numel() == 1,
           "StepDecider: the backward seed is for one f32 loss, got {}", loss.desc());
  Tensor seed = Tensor::empty(loss.shape(), DType::f32, device_);
  backend_.copy(seed.raw_data(), &gate()->seed, sizeof(float));
  return seed;
}

void StepDecider::decide(dist::DataParallel& dp) {
  TS_CHECK(dp.norm_counted_here() == opt_.counts_norm,
           "StepDecider: built for a rank whose norm {} counted, used with one whose norm {}",
           opt_.counts_norm ? "is" : "is not", dp.norm_counted_here() ? "is" : "is not");
  decide([&dp](double* squares) { dp.queue_squared_norm(squares); });
}

void StepDecider::decide(const std::function<void(double* squares)>& queue_squared_norm) {
  TS_CHECK(!full(), "StepDecider: {} verdicts unread (read() them first)", pending_);
  auto* sums = static_cast<RankStepSums*>(mine_.raw_data());
  queue_squared_norm(&sums->squares);
  const int world = comm_.world_size();
  // Gathered as bytes, summed by the verdict in rank order: the f64 sums the host would form.
  if (world > 1)
    comm_.all_gather_async(mine_, all_, std::vector<int64_t>(size_t(world), kSumsFloats))->wait();
  StepDecisionArgs a;
  a.gate = static_cast<StepGate*>(gate_.raw_data());
  a.record = static_cast<StepRecord*>(records_.raw_data()) + pending_;
  a.sums = static_cast<const RankStepSums*>(all_.raw_data());
  a.ranks = world;
  a.micro_batches = opt_.micro_batches;
  a.max_norm = opt_.max_norm;
  a.scaler_enabled = opt_.scaler.enabled ? 1 : 0;
  a.growth_factor = opt_.scaler.growth_factor;
  a.backoff_factor = opt_.scaler.backoff_factor;
  a.min_scale = opt_.scaler.min_scale;
  a.growth_interval = opt_.scaler.growth_interval;
  backend_.decide_step(a);
  ++pending_;
}

StepDecider::Verdicts StepDecider::read() {
  Verdicts v;
  v.steps.resize(size_t(pending_));
  std::unique_ptr<HostRead> records;
  if (pending_ > 0)
    records = backend_.read_async(records_.raw_data(), sizeof(StepRecord) * size_t(pending_));
  // The gate's copy is queued last: waiting for it waits for both.
  const std::unique_ptr<HostRead> gate = backend_.read_async(gate_.raw_data(), sizeof(StepGate));
  std::memcpy(&v.state, gate->wait(), sizeof(StepGate));
  if (records) std::memcpy(v.steps.data(), records->wait(), sizeof(StepRecord) * v.steps.size());
  pending_ = 0;
  return v;
}

}  // namespace tessera::train
