// embedding: gathers rows of weight [V, C] by i32 ids of any shape into [..., C]; the backward
// scatter-adds the output gradient into an f32 [V, C] gradient (repeated ids accumulate).
#include <string>

#include "autograd/engine.h"
#include "kernels/common/id_groups.h"
#include "kernels/cpu/embedding.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

void check_embedding_args(const char* op, const Tensor& weight0, const Tensor& ids0) {
  check_float(op, "weight", weight0);
  check_ndim(op, "weight", weight0, 2);
  check_dtype(op, "ids", ids0, DType::i32);
  TS_CHECK(ids0.ndim() < kMaxDims,
           "{}: ids {} have {} dims: the output [..., C] would need {}, expected at most "
           "{} dims of ids",
           op, ids0.desc(), ids0.ndim(), ids0.ndim() + 1, kMaxDims - 1);
}

// The lookup and its backward, with the (checked) ids given twice: on the weight's device for
// the forward kernel and on the host for the backward (the same tensor on the CPU; on the meta
// device, which has no values, the ids themselves, never read). Ids equal to kernels::kSkippedId
// read as zero rows and take no gradient.
Tensor lookup(const char* op, const Tensor& weight0, const Tensor& ids0, const Tensor& ids,
              const Tensor& host_ids) {
  const Device dev = weight0.device();
  Tensor w = weight0.contiguous();
  const int64_t V = w.dim(0), C = w.dim(1), n = ids.numel();
  std::vector<int64_t> dims = ids.shape().vec();
  dims.push_back(C);
  Tensor y = Tensor::empty(Shape(dims), w.dtype(), dev);
  // The forward gathers n rows: the ids read, n rows of the table read, the output written.
  const meta::KernelCost fwd = meta::memory_bound_cost(
      "embedding_fwd", n * C, cost::io_bytes({ids, y}) + cost::bytes_of(n * C, w.dtype()), 0);
  if (meta::kernel_runs(dev, fwd))
    dispatch_float(w.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (is_cuda(dev))
        device_kernels<T>(op, dev).embedding_forward(w.data<T>(), ids.data<int32_t>(), y.data<T>(),
                                                     n, C);
      else
        cpu::embedding_forward<T>(w.data<T>(), host_ids.data<int32_t>(), y.data<T>(), n, C);
    });
  const DType wt = w.dtype();
  // The backward reads the ids on the host: the CPU kernel scatters by them, the CUDA one groups
  // them by id there (host_ids is ids itself on the CPU; on a GPU, no second copy back).
  return autograd::record(y, op, {weight0, ids0}, [=](const Tensor& g) {
    Tensor gy = g.to(DType::f32).contiguous();
    // Scatter-added straight into the table's gradient buffer when it has one: a [V, C]
    // temporary (154 MB for GPT-2's token table) and a pass over it saved. Both kernels add
    // each row's gradients onto its old value in position order: the same bits on both
    // backends, run after run.
    Tensor acc = wt == DType::f32 ? autograd::leaf_grad_buffer(weight0) : Tensor();
    Tensor gw = acc.defined() ? Tensor() : Tensor::empty(Shape{V, C}, DType::f32, dev);
    float* dst = acc.defined() ? acc.data<float>() : gw.data<float>();
    // dY and the ids read, n rows of the gradient read and written, and a fresh table zeroed.
    const double bytes = cost::io_bytes({gy, ids, gw}) + 2 * cost::bytes_of(n * C, DType::f32);
    meta::scratch(dev, {cuda_scratch::embedding_groups(n, C)});  // the id groups, staged
    if (meta::kernel_runs(dev, meta::memory_bound_cost("embedding_bwd", n * C, bytes))) {
      if (is_cuda(dev))  // positions grouped by id: one block per id, no atomics
        device_kernels(op, dev).embedding_backward(
            gy.data<float>(), kernels::group_ids(host_ids.data<int32_t>(), n, V), dst, V, C,
            acc.defined());
      else
        cpu::embedding_backward(gy.data<float>(), host_ids.data<int32_t>(), dst, n, V, C,
                                acc.defined());
    }
    if (acc.defined()) return std::vector<Tensor>{Tensor(), Tensor()};
    return std::vector<Tensor>{wt == DType::f32 ? gw : gw.to(wt), Tensor()};
  });
}

}  // namespace

Tensor embedding(const Tensor& weight0, const Tensor& ids0) {
  const char* op = "embedding";
  check_embedding_args(op, weight0, ids0);
  common_device(op, {{"weight", weight0}, {"ids", ids0}});
  Tensor ids = ids0.contiguous();
  const int64_t V = weight0.dim(0), n = ids.numel();
  // The range check reads the ids on the host (a copy of B*T ids from a device): an id out of
  // range would read outside the table on the device, silently. The meta device has no ids to
  // check (nor to copy).
  if (ids.device().is_meta()) return lookup(op, weight0, ids0, ids, ids);
  const Tensor host_ids = ids.to(Device::cpu());
  const int32_t* id = host_ids.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    TS_CHECK(id[i] >= 0 && id[i] < V,
             "embedding: id {} at ids{} is out of range for weight {}: expected 0 <= id < {} (V)",
             id[i], index_str(ids.shape(), i), weight0.desc(), V);
  }
  return lookup(op, weight0, ids0, ids, host_ids);
}

Tensor embedding(const Tensor& weight0, const Tensor& ids0, int64_t first_id) {
  const char* op = "embedding (vocabulary shard)";
  check_embedding_args(op, weight0, ids0);
  const Device dev = common_device(op, {{"weight", weight0}, {"ids", ids0}});
  const int64_t V = weight0.dim(0), n = ids0.numel();
  TS_CHECK(first_id >= 0, "{}: first id {} is negative", op, first_id);
  if (dev.is_meta()) {  // no ids to map: the shard's local ids as a buffer of their shape only
    const Tensor local = Tensor::empty(ids0.shape(), DType::i32, dev);
    return lookup(op, weight0, ids0, local, local);
  }
  const Tensor global = ids0.contiguous().to(Device::cpu());
  const int32_t* id = global.data<int32_t>();
  std::vector<int32_t> local(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    TS_CHECK(id[i] >= 0, "{}: id {} at ids{} is negative", op, id[i], index_str(ids0.shape(), i));
    const int64_t row = int64_t(id[i]) - first_id;
    local[size_t(i)] = row >= 0 && row < V ? int32_t(row) : kernels::kSkippedId;
  }
  const Tensor host_ids = Tensor::from_ints(local, ids0.shape());
  return lookup(op, weight0, ids0, dev.is_cpu() ? host_ids : host_ids.to(dev), host_ids);
}

}  // namespace tessera::ops
