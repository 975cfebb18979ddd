#include "dist/pipeline_runner.h"

#include <chrono>
#include <map>
#include <utility>

#include "core/error.h"
#include "ops/ops.h"

namespace tessera::dist::pipeline {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// What one (micro-batch, stage) holds between its forward and backward.
struct Slot {
  Tensor input;        // the received activation, a leaf whose .grad the backward fills
  Tensor output;       // the stage's output (the loss on the last stage), graph attached
  Tensor output_grad;  // received from the next stage
  Tensor input_grad;   // to send to the previous stage
};

class StepRunner {
 public:
  StepRunner(const Schedule& s, Communicator& pp, Device device, const StageWork& work)
      : s_(s), pp_(pp), device_(device), work_(work) {}

  StepStats run() {
    StepStats stats;
    for (const Step& step : s_.ranks.at(size_t(pp_.rank()))) {
      const auto t0 = Clock::now();
      if (step.size() == 1 && !is_transfer(step[0].op)) {
        compute(step[0], stats);
        stats.compute_s += seconds_since(t0);
      } else {
        stats.sent_bytes += transfer(step);
        stats.transfer_s += seconds_since(t0);
      }
    }
    return stats;
  }

 private:
  bool last_stage(int stage) const { return stage == s_.stages() - 1; }

  void compute(const Action& a, StepStats& stats) {
    Slot& slot = slots_[{a.micro, a.stage}];
    if (a.op == Op::forward) {
      if (a.stage > 0) {
        TS_CHECK(slot.input.defined(), "pipeline: {} has no input activation", a.str());
        slot.input.set_requires_grad(true);
      }
      slot.output = work_.forward(a.stage, a.micro, slot.input);
      if (last_stage(a.stage)) {
        if (stats.losses.size() < size_t(s_.m)) stats.losses.resize(size_t(s_.m));
        stats.losses[size_t(a.micro)] = slot.output.detach();
      }
      return;
    }
    work_.before_backward(a.micro, a.micro == s_.m - 1);
    if (last_stage(a.stage) && work_.backward_seed) {
      slot.output.backward(work_.backward_seed(slot.output));
    } else if (last_stage(a.stage)) {
      const float f = work_.loss_scale / float(s_.m);
      (f == 1.f ? slot.output : ops::scale(slot.output, f)).backward();
    } else {
      TS_CHECK(slot.output_grad.defined(), "pipeline: {} has no output gradient", a.str());
      slot.output.backward(slot.output_grad);
    }
    if (a.stage > 0) slot.input_grad = slot.input.grad().to(DType::f32).contiguous();
    // The graph and the activations go as soon as the backward is done.
    slot.output = slot.output_grad = slot.input = Tensor();
  }

  // Posts one batch and waits for it; returns the bytes it sent.
  int64_t transfer(const Step& step) {
    std::vector<P2POp> ops;
    for (const Action& a : step) {
      switch (a.op) {
        case Op::send_activation:
          ops.push_back(P2POp::send(
              slots_[{a.micro, a.stage}].output.detach().to(DType::f32).contiguous(), a.peer));
          break;
        case Op::recv_activation: {
          Tensor buf = Tensor::empty(work_.output_shape(a.stage), DType::f32, device_);
          slots_[{a.micro, a.stage + 1}].input = buf;
          ops.push_back(P2POp::recv(buf, a.peer));
          break;
        }
        case Op::send_gradient: {
          Slot& slot = slots_[{a.micro, a.stage}];
          ops.push_back(P2POp::send(slot.input_grad, a.peer));
          break;
        }
        case Op::recv_gradient: {
          Tensor buf = Tensor::empty(work_.output_shape(a.stage - 1), DType::f32, device_);
          slots_[{a.micro, a.stage - 1}].output_grad = buf;
          ops.push_back(P2POp::recv(buf, a.peer));
          break;
        }
        default:
          fail("pipeline: {} inside a transfer batch", a.str());
      }
    }
    int64_t sent = 0;
    for (const P2POp& op : ops)
      if (op.kind == P2POp::Kind::send) sent += op.t.numel() * int64_t(sizeof(float));
    pp_.batch_send_recv(std::move(ops));
    // Sent gradients are no longer needed.
    for (const Action& a : step)
      if (a.op == Op::send_gradient) slots_.erase({a.micro, a.stage});
    return sent;
  }

  const Schedule& s_;
  Communicator& pp_;
  Device device_;
  const StageWork& work_;
  std::map<std::pair<int, int>, Slot> slots_;
};

}  // namespace

StepStats run_schedule(const Schedule& schedule, Communicator& pp, Device device,
                       const StageWork& work) {
  TS_CHECK(schedule.p == pp.world_size(),
           "pipeline: a schedule for {} stages' ranks run on {} ranks", schedule.p,
           pp.world_size());
  return StepRunner(schedule, pp, device, work).run();
}

}  // namespace tessera::dist::pipeline
