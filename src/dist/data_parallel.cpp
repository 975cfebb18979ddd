#include "dist/data_parallel.h"

#include <algorithm>
#include <cstring>

#include "core/backend.h"
#include "core/meta_device.h"
#include "kernels/cpu/elementwise.h"

#include "dist/ddp.h"
#include "dist/zero.h"

namespace tessera::dist {

std::unique_ptr<DataParallel> make_data_parallel(nn::Module& model, Communicator& comm,
                                                 const DataParallelOptions& opt, Tracer* tracer,
                                                 const ParameterUnits& units) {
  TS_CHECK(opt.zero_stage >= 0 && opt.zero_stage <= 3,
           "parallel.zero_stage = {}: expected 0, 1, 2 or 3", opt.zero_stage);
  TS_CHECK(opt.bucket_mb > 0, "parallel.bucket_mb = {}: expected > 0", opt.bucket_mb);
  if (opt.zero_stage == 0) return std::make_unique<DDP>(model, comm, opt, tracer);
  return std::make_unique<Zero>(model, comm, opt, tracer, units);
}

DataParallel::DataParallel(Communicator& comm, Tracer* tracer, const DataParallelOptions& opt)
    : comm_(comm), tracer_(tracer), model_parallel_(opt.model_parallel), counted_(opt.counted) {}

void DataParallel::visit_present(size_t count, const std::function<void(size_t)>& visit) {
  for (size_t i = 0; i < count; ++i) visit(i);
}

nn::NamedTensors host_parameters(DataParallel& dp, const nn::Module& model, bool keep) {
  nn::NamedTensors params = model.named_parameters();
  dp.visit_present(params.size(), [&](size_t i) {
    if (!keep) return;
    // A copy: under ZeRO-3 the values live in a unit's buffer only until it is released.
    Tensor& t = params[i].second;
    t = t.device().is_cpu() ? t.clone() : t.to(Device::cpu());
  });
  if (!keep) params.clear();
  return params;
}

void DataParallel::for_each_counted_range(
    const Tensor& grads, int64_t begin, const std::vector<ParamSegment>& segments,
    const std::function<void(const float* p, int64_t n)>& f) const {
  const int64_t end = begin + grads.numel();
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i < counted_.size() && !counted_[i]) continue;
    const int64_t a = std::max(segments[i].offset, begin);
    const int64_t b = std::min(segments[i].offset + segments[i].numel, end);
    if (a < b) f(grads.data<float>() + (a - begin), b - a);
  }
}

double DataParallel::counted_sum_squares(const Tensor& grads, int64_t begin,
                                         const std::vector<ParamSegment>& segments) const {
  if (grads.device().is_cpu())
    meta::kernel_runs(Device::cpu(), meta::table_cost::sum_squares(grads.numel()));
  double sum = 0;
  for_each_counted_range(grads, begin, segments, [&](const float* p, int64_t n) {
    sum += grads.device().is_cpu() ? cpu::sum_squares(p, n)
                                   : backend_for(grads.device(), "gradient norm").sum_squares(p, n);
  });
  return sum;
}

void DataParallel::queue_counted_sum_squares(const Tensor& grads, int64_t begin,
                                             const std::vector<ParamSegment>& segments,
                                             double* dst) const {
  const DeviceBackend& b = backend_for(grads.device(), "gradient norm");
  for_each_counted_range(grads, begin, segments,
                         [&](const float* p, int64_t n) { b.sum_squares_into(p, n, dst); });
}

uint64_t fnv1a(const float* p, int64_t n, uint64_t h) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  for (int64_t i = 0; i < n * int64_t(sizeof(float)); ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace tessera::dist
