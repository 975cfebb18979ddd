#include "ckpt/whole_layout.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "dist/mesh.h"
#include "nn/safetensors.h"
#include "optim/flat_params.h"

namespace tessera::ckpt {

namespace fs = std::filesystem;

namespace {

int64_t round_up(int64_t n, int64_t m) {
  return (n + m - 1) / m * m;
}

Tensor host(const Tensor& t) {
  return t.device().is_cpu() ? t : t.to(Device::cpu());
}

// Every element of this rank's local flat layout for one state buffer: ZeRO's shards (which
// tile the layout in data-parallel rank order) gathered over the data-parallel ranks.
Tensor full_local_buffer(const Tensor& mine, dist::DataParallel& dp, int64_t numel) {
  if (dp.zero_stage() == 0) return mine;
  std::vector<int64_t> counts;
  for (double n : dp.comm().all_gather_f64(double(mine.numel()))) counts.push_back(int64_t(n));
  Tensor all = Tensor::empty(Shape{numel}, DType::f32, mine.device());
  dp.comm().all_gather(mine, all, counts);
  return all;
}

// Each parameter's slice of a local flat buffer, shaped as the parameter (views).
nn::NamedTensors per_parameter(const Tensor& flat, const std::vector<ParamSegment>& segs) {
  nn::NamedTensors out;
  for (const ParamSegment& s : segs)
    out.emplace_back(s.name, flat.slice_rows(s.offset, s.offset + s.numel).view(s.shape));
  return out;
}

// Whole per-parameter tensors laid into the whole flat layout (padding zero).
Tensor flatten_whole(const nn::NamedTensors& whole, const std::vector<ParamSegment>& segs,
                     int64_t numel) {
  Tensor flat = Tensor::zeros(Shape{numel});
  for (size_t i = 0; i < segs.size(); ++i)
    std::memcpy(flat.data<float>() + segs[i].offset, whole[i].second.data<float>(),
                size_t(segs[i].numel) * sizeof(float));
  return flat;
}

// Copies this rank's blocks of a whole parameter (host f32 in the whole shape) into the local
// flat buffer `dst` that holds local elements [dst_begin, dst_begin + dst.numel()).
void cut_into(const float* whole, const nn::TensorShard& shard, const ParamSegment& local,
              float* dst, int64_t dst_begin, int64_t dst_end) {
  const int64_t a = std::max(local.offset, dst_begin);
  const int64_t b = std::min(local.offset + local.numel, dst_end);
  if (a >= b) return;
  Tensor whole_t = Tensor::empty(shard.global);
  std::memcpy(whole_t.data<float>(), whole, size_t(shard.global.numel()) * sizeof(float));
  const Tensor mine =
      shard.replicated() ? whole_t : nn::take_blocks(whole_t, shard.dim, shard.blocks);
  std::memcpy(dst + (a - dst_begin), mine.data<float>() + (a - local.offset),
              size_t(b - a) * sizeof(float));
}

std::vector<std::string> segment_names(const std::vector<ParamSegment>& segs) {
  std::vector<std::string> names;
  for (const ParamSegment& s : segs) names.push_back(s.name);
  return names;
}

// Local per-parameter tensors (named, in local order) made whole: over the tensor-parallel
// ranks, then the pipeline ranks, and put in the whole model's order.
nn::NamedTensors whole_tensors(const nn::NamedTensors& local, const WholeModelLayout& l,
                               const std::vector<std::string>& order) {
  nn::NamedTensors t = local;
  if (l.tp) t = dist::gather_whole_parameters(t, l.shards, *l.tp);
  if (!l.pp) {
    for (auto& [name, x] : t) x = host(x).to(DType::f32).contiguous();
    return t;
  }
  t = dist::gather_stage_parameters(t, *l.pp, l.device);
  std::map<std::string, Tensor> by_name(t.begin(), t.end());
  nn::NamedTensors out;
  for (const std::string& name : order) {
    auto it = by_name.find(name);
    TS_CHECK(it != by_name.end(), "checkpoint: no pipeline stage holds parameter '{}'", name);
    out.emplace_back(name, it->second);
  }
  return out;
}

const nn::TensorShard whole_shard(const Shape& s) {
  return nn::TensorShard{s, -1, {}};
}

}  // namespace

std::vector<ParamSegment> whole_segments(const std::vector<std::pair<std::string, Shape>>& params,
                                         int64_t* numel) {
  std::vector<ParamSegment> out;
  int64_t end = 0;
  for (const auto& [name, shape] : params) {
    ParamSegment s{name, shape, round_up(end, FlatParameters::kAlignElems), shape.numel()};
    end = s.offset + s.numel;
    out.push_back(std::move(s));
  }
  *numel = round_up(end, FlatParameters::kAlignElems);
  return out;
}

Snapshot take_whole_snapshot(dist::DataParallel& dp, nn::Module& model,
                             const WholeModelLayout& layout, bool writer, TrainerState trainer,
                             const std::string& config_toml, const std::string& model_kind) {
  const dist::TrainingStateView v = dp.training_state();
  const std::vector<std::string> order =
      layout.order.empty() ? segment_names(v.segments) : layout.order;
  Snapshot s;
  s.step = trainer.step;
  dp.gather_all();
  nn::NamedTensors weights = whole_tensors(model.named_parameters(), layout, order);
  dp.release_all();
  std::vector<std::pair<std::string, Shape>> shapes;
  for (const auto& [name, t] : weights) shapes.emplace_back(name, t.shape());
  int64_t whole_numel = 0;
  const std::vector<ParamSegment> whole = whole_segments(shapes, &whole_numel);
  nn::NamedTensors buffers;
  for (const auto& [name, mine] : v.state) {
    const Tensor local = full_local_buffer(mine, dp, v.numel);
    const nn::NamedTensors parts = whole_tensors(per_parameter(local, v.segments), layout, order);
    buffers.emplace_back(name, flatten_whole(parts, whole, whole_numel));
  }
  if (!writer) return s;
  s.weights = std::move(weights);
  s.weights_metadata = {{"format", "pt"}, {"tessera_model", model_kind}};
  s.config_toml = config_toml;
  trainer.flat_numel = whole_numel;
  trainer.optimizer_shards = {{optimizer_file_name(0), 0, whole_numel}};
  s.trainer = trainer;
  s.optimizer_file = optimizer_file_name(0);
  s.optimizer_buffers = std::move(buffers);
  s.optimizer_metadata = {{"optimizer", v.optimizer},
                          {"steps", std::to_string(v.optimizer_steps)},
                          {"flat_numel", std::to_string(whole_numel)},
                          {"begin", "0"},
                          {"end", std::to_string(whole_numel)}};
  return s;
}

void load_whole_into(const VerifiedCheckpoint& ckpt, dist::DataParallel& dp,
                     const WholeModelLayout& layout) {
  dist::TrainingStateView v = dp.training_state();
  const TrainerState& st = ckpt.state;
  const std::vector<std::string> order =
      layout.order.empty() ? segment_names(v.segments) : layout.order;
  const std::string model_path = (fs::path(ckpt.dir) / kModelName).string();
  const nn::SafetensorsFile model = nn::read_safetensors(model_path);

  // The whole layout: every parameter of the whole model, shaped as the file has it (checked
  // against this rank's own below), in the model's order.
  std::vector<std::pair<std::string, Shape>> shapes;
  for (const std::string& name : order) {
    auto it = model.tensors.find(name);
    TS_CHECK(it != model.tensors.end() && it->second.dtype() == DType::f32,
             "checkpoint file '{}' does not fit this model: '{}' is {}, expected f32", model_path,
             name, it == model.tensors.end() ? std::string("missing") : it->second.desc());
    shapes.emplace_back(name, it->second.shape());
  }
  TS_CHECK(model.tensors.size() == order.size(),
           "checkpoint file '{}' holds {} tensors, the model has {} parameters", model_path,
           model.tensors.size(), order.size());
  int64_t whole_numel = 0;
  const std::vector<ParamSegment> whole = whole_segments(shapes, &whole_numel);
  std::map<std::string, const ParamSegment*> whole_by_name;
  for (const ParamSegment& w : whole) whole_by_name[w.name] = &w;
  const std::string state_path = (fs::path(ckpt.dir) / kTrainerStateName).string();
  TS_CHECK(st.optimizer == v.optimizer && st.flat_numel == whole_numel,
           "checkpoint file '{}': optimizer '{}' over {} flat elements, but this run's whole "
           "model has '{}' over {} (a different optimizer or model)",
           state_path, st.optimizer, st.flat_numel, v.optimizer, whole_numel);
  std::vector<nn::TensorShard> shards;
  for (size_t i = 0; i < v.segments.size(); ++i) {
    const nn::TensorShard sh =
        i < layout.shards.size() ? layout.shards[i] : whole_shard(v.segments[i].shape);
    auto it = whole_by_name.find(v.segments[i].name);
    TS_CHECK(it != whole_by_name.end() && it->second->shape == sh.global,
             "checkpoint file '{}' does not fit this model: '{}' is {}, expected {}", model_path,
             v.segments[i].name,
             it == whole_by_name.end() ? std::string("missing") : it->second->shape.str(),
             sh.global.str());
    shards.push_back(sh);
  }

  // Optimizer state: the whole flat buffers, assembled from every saved shard.
  std::vector<std::pair<std::string, Tensor>> state;
  for (const auto& [name, mine] : v.state)
    state.emplace_back(name, Tensor::zeros(Shape{whole_numel}));
  for (const OptimizerShard& sh : st.optimizer_shards) {
    if (sh.begin == sh.end) continue;
    const std::string path = (fs::path(ckpt.dir) / sh.file).string();
    const nn::SafetensorsFile f = nn::read_safetensors(path);
    for (auto& [name, buffer] : state) {
      auto it = f.tensors.find(name);
      TS_CHECK(it != f.tensors.end() && it->second.dtype() == DType::f32 &&
                   it->second.shape() == Shape{sh.end - sh.begin},
               "checkpoint file '{}': state buffer '{}' is {}, expected f32 [{}]", path, name,
               it == f.tensors.end() ? std::string("missing") : it->second.desc(),
               sh.end - sh.begin);
      std::memcpy(buffer.data<float>() + sh.begin, it->second.data<float>(),
                  size_t(sh.end - sh.begin) * sizeof(float));
    }
  }

  // Everything checked: cut each parameter to this rank's blocks and shard.
  Tensor values = host(v.values).clone();
  const int64_t vb = v.values_begin, ve = vb + v.values.numel();
  for (size_t i = 0; i < v.segments.size(); ++i)
    cut_into(model.tensors.at(v.segments[i].name).data<float>(), shards[i], v.segments[i],
             values.data<float>(), vb, ve);
  Tensor(v.values).copy_from(values);
  for (size_t k = 0; k < v.state.size(); ++k) {
    Tensor mine = host(v.state[k].second).clone();
    for (size_t i = 0; i < v.segments.size(); ++i)
      cut_into(state[k].second.data<float>() + whole_by_name.at(v.segments[i].name)->offset,
               shards[i], v.segments[i], mine.data<float>(), v.state_begin, v.state_end);
    Tensor(v.state[k].second).copy_from(mine);
  }
  dp.set_optimizer_steps(st.optimizer_steps);
}

}  // namespace tessera::ckpt
