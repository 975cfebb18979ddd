// sharded_cross_entropy: the cross-entropy of logits split by vocabulary across ranks (the
// phases are described in kernels/cpu/sharded_cross_entropy.h); the exchange between them is
// the caller's (nn/tensor_parallel.h gathers over the tensor-parallel group).
#include <string>

#include "autograd/engine.h"
#include "kernels/cpu/sharded_cross_entropy.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {
// FLOPs per logit the cost model counts: the statistics' max, exp and sum; the backward's
// softmax and update.
constexpr double kStatsFlops = 3, kBackwardFlops = 3;
}  // namespace

Tensor sharded_cross_entropy(const Tensor& logits0, const Tensor& targets0, int64_t first_id,
                             int64_t vocab_size, int32_t ignore_index, DType grad_dtype,
                             const GatherShardStats& gather) {
  const char* op = "sharded_cross_entropy";
  TS_CHECK(grad_dtype == DType::f32 || grad_dtype == DType::bf16,
           "{}: gradient dtype {}: expected f32 or bf16", op, dtype_name(grad_dtype));
  check_dtype(op, "logits", logits0, DType::f32);
  check_dtype(op, "targets", targets0, DType::i32);
  const Device dev = common_device(op, {{"logits", logits0}, {"targets", targets0}});
  TS_CHECK(logits0.ndim() >= 1, "{}: logits {} have no class dim", op, logits0.desc());
  const int64_t V = logits0.dim(-1);
  TS_CHECK(first_id >= 0 && first_id + V <= vocab_size,
           "{}: logits {} hold ids {} .. {}, outside the vocabulary of {}", op, logits0.desc(),
           first_id, first_id + V - 1, vocab_size);
  std::vector<int64_t> expect = logits0.shape().vec();
  expect.pop_back();
  TS_CHECK(targets0.shape() == Shape(expect), "{}: targets {} do not fit logits {}: expected {}",
           op, targets0.desc(), logits0.desc(), Shape(expect).str());
  Tensor logits = logits0.contiguous(), targets = targets0.contiguous();
  const int64_t rows = targets.numel();
  // The targets' range check on the host (cross_entropy's); none on the meta device (no values).
  const int64_t count = dev.is_meta()
                            ? 0
                            : count_checked_targets(op, targets.to(Device::cpu()), vocab_size,
                                                    "the vocabulary", ignore_index);

  Tensor stats = Tensor::empty(Shape{2, rows}, DType::f32, dev);
  const meta::KernelCost stats_cost =
      cost::pass("sharded_xent_stats", rows * V, {logits, targets, stats}, kStatsFlops);
  if (meta::kernel_runs(dev, stats_cost)) {
    if (is_cuda(dev))
      device_kernels(op, dev).sharded_cross_entropy_stats(
          logits.data<float>(), targets.data<int32_t>(), stats.data<float>(), rows, V, first_id,
          ignore_index);
    else
      cpu::sharded_cross_entropy_stats(logits.data<float>(), targets.data<int32_t>(),
                                       stats.data<float>(), rows, V, first_id, ignore_index);
  }
  const Tensor all = gather(stats).contiguous();
  TS_CHECK(all.dtype() == DType::f32 && all.ndim() == 3 && all.dim(1) == 2 && all.dim(2) == rows &&
               all.device() == dev,
           "{}: the gathered statistics are {}, expected f32 [ranks, 2, {}] on {}", op, all.desc(),
           rows, dev.str());
  const int64_t ranks = all.dim(0);
  Tensor lse = Tensor::empty(Shape{rows}, DType::f32, dev);
  Tensor loss;
  const meta::KernelCost combine =
      cost::pass("sharded_xent_combine", ranks * rows, {all, targets, lse}, kStatsFlops);
  if (is_cuda(dev)) {
    loss = Tensor::empty(Shape{}, DType::f32, dev);
    meta::scratch(dev, {cuda_scratch::row_loss(rows)});
    if (meta::kernel_runs(dev, combine))
      device_kernels(op, dev).sharded_cross_entropy_combine(
          all.data<float>(), ranks, targets.data<int32_t>(), lse.data<float>(), loss.data<float>(),
          rows, ignore_index);
  } else {
    kernels::CrossEntropySum s;  // the meta device computes nothing: a loss of 0
    if (meta::kernel_runs(dev, combine))
      s = cpu::sharded_cross_entropy_combine(all.data<float>(), ranks, targets.data<int32_t>(),
                                             lse.data<float>(), rows, ignore_index);
    loss = Tensor::full(Shape{}, s.count ? s.loss / double(s.count) : 0.0, DType::f32, dev);
  }

  Tensor xs = logits.detach();
  // The backward: logits, targets and lse read, the gradient written.
  auto backward_cost = [=](const Tensor& grad) {
    return cost::pass("sharded_xent_bwd", xs.numel(), {xs, targets, lse, grad}, kBackwardFlops);
  };
  return autograd::record(loss, op, {logits0, targets0}, [=](const Tensor& g) {
    Tensor gx = Tensor::empty(xs.shape(), grad_dtype, dev);
    if (is_cuda(dev)) {  // the gradient written in grad_dtype directly, as cross_entropy's
      const Tensor g32 = g.to(DType::f32).contiguous();
      if (meta::kernel_runs(dev, backward_cost(gx))) {
        if (grad_dtype == DType::bf16)
          device_kernels<bf16>(op, dev).sharded_cross_entropy_backward(
              xs.data<float>(), targets.data<int32_t>(), lse.data<float>(), g32.data<float>(),
              count, gx.data<bf16>(), rows, V, first_id, ignore_index);
        else
          device_kernels<float>(op, dev).sharded_cross_entropy_backward(
              xs.data<float>(), targets.data<int32_t>(), lse.data<float>(), g32.data<float>(),
              count, gx.data<float>(), rows, V, first_id, ignore_index);
      }
      return std::vector<Tensor>{gx, Tensor()};
    }
    if (!meta::kernel_runs(dev, backward_cost(gx))) return std::vector<Tensor>{gx, Tensor()};
    const float scale = count ? g.item() / float(count) : 0.f;
    if (grad_dtype == DType::bf16)
      cpu::sharded_cross_entropy_backward<bf16>(xs.data<float>(), targets.data<int32_t>(),
                                                lse.data<float>(), scale, gx.data<bf16>(), rows, V,
                                                first_id, ignore_index);
    else
      cpu::sharded_cross_entropy_backward<float>(xs.data<float>(), targets.data<int32_t>(),
                                                 lse.data<float>(), scale, gx.data<float>(), rows,
                                                 V, first_id, ignore_index);
    return std::vector<Tensor>{gx, Tensor()};
  });
}

}  // namespace tessera::ops
