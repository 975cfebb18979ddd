#include "optim/optimizer.h"

#include <cmath>
#include <vector>

#include "core/backend.h"

namespace tessera {

bool decay_if_matrix(const Tensor& param) {
  return param.ndim() >= 2;
}

Optimizer::Optimizer(FlatParameters& params, const DecayFilter& decay_filter) : params_(params) {
  const DecayFilter& f = decay_filter ? decay_filter : DecayFilter(decay_if_matrix);
  for (const Tensor& p : params_.params()) decay_.push_back(f(p));
  rebuild_runs();
}

void Optimizer::set_decay(size_t param, bool on) {
  TS_CHECK(param < decay_.size(), "{}: set_decay: parameter index {} out of range (have {})",
           name(), param, decay_.size());
  decay_[param] = on;
  rebuild_runs();
}

void Optimizer::rebuild_runs() {
  runs_.clear();
  device_runs_ = Tensor();  // uploaded again when next needed
  const auto& segs = params_.segments();
  for (size_t i = 0; i < segs.size(); ++i) {
    const int64_t end = i + 1 < segs.size() ? segs[i + 1].offset : params_.numel();
    if (!runs_.empty() && runs_.back().decay == decay_[i])
      runs_.back().end = end;
    else
      runs_.push_back({segs[i].offset, end, decay_[i]});
  }
}

const Tensor& Optimizer::device_decay_runs() {
  if (device_runs_.defined()) return device_runs_;
  TS_CHECK(!params_.device().is_cpu(),
           "{}: device_decay_runs: the parameters are on {}, expected a CUDA device", name(),
           params_.device().str());
  const DeviceBackend& b = backend_for(params_.device(), name());
  std::vector<DeviceDecayRun> host;
  for (const DecayRun& r : runs_) host.push_back({r.begin, r.end, r.decay ? 1 : 0});
  static_assert(sizeof(DeviceDecayRun) % sizeof(int64_t) == 0);
  const size_t bytes = host.size() * sizeof(DeviceDecayRun);
  Tensor t = Tensor::empty(Shape{int64_t(bytes / sizeof(int64_t))}, DType::i64, params_.device());
  // From pageable memory: the copy has read `host` when it returns (core/backend.h), and kernels
  // queued after it on the stream see the runs.
  if (bytes) b.copy_from_host(t.raw_data(), host.data(), bytes);
  device_runs_ = t;
  return device_runs_;
}

float* Optimizer::add_state_buffer(const std::string& buffer_name) {
  // On the parameters' device: the update kernels read and write state where the values are.
  Tensor t = Tensor::zeros(Shape{params_.numel()}, DType::f32, params_.device());
  buffers_.emplace_back(buffer_name, t);
  return t.data<float>();
}

void Optimizer::begin_step(float lr) {
  TS_CHECK(std::isfinite(lr) && lr >= 0, "{}: step: learning rate {} must be finite and >= 0",
           name(), lr);
  params_.sync_grads();
  ++step_;
}

OptimizerState Optimizer::state() const {
  return {name(), step_, buffers_};
}

void Optimizer::load_state(const OptimizerState& s) {
  TS_CHECK(s.optimizer == name(), "{}: load_state: the state is from optimizer '{}'", name(),
           s.optimizer);
  TS_CHECK(s.step >= 0, "{}: load_state: step {} is negative", name(), s.step);
  TS_CHECK(s.buffers.size() == buffers_.size(), "{}: load_state: {} state buffers, expected {}",
           name(), s.buffers.size(), buffers_.size());
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const auto& [src_name, src] = s.buffers[i];
    const auto& [dst_name, dst] = buffers_[i];
    TS_CHECK(src_name == dst_name, "{}: load_state: buffer #{} is '{}', expected '{}'", name(), i,
             src_name, dst_name);
    TS_CHECK(src.defined() && src.shape() == dst.shape(),
             "{}: load_state: buffer '{}' is {}, expected {} (a different parameter layout?)",
             name(), src_name, src.desc(), dst.desc());
  }
  // All checks pass before anything is written: a refused load leaves the optimizer intact.
  for (size_t i = 0; i < buffers_.size(); ++i) {
    Tensor dst = buffers_[i].second;
    const Tensor& src = s.buffers[i].second;
    if (src.raw_data() != dst.raw_data()) dst.copy_from(src);  // our own state() is a no-op
  }
  step_ = s.step;
}

}  // namespace tessera
