#include "dist/mesh.h"

#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "dist/local_comm.h"

namespace tessera::dist {

Mesh::Mesh(std::shared_ptr<Communicator> world, int tp, int pp, int cp) : world_(std::move(world)) {
  const int n = world_->world_size();
  TS_CHECK(tp > 0 && pp > 0 && cp > 0,
           "config: parallel.tp = {}, parallel.pp = {}, parallel.cp = {}: each must be >= 1", tp,
           pp, cp);
  TS_CHECK(n % (tp * pp * cp) == 0,
           "config: parallel.tp = {} x parallel.pp = {} x parallel.cp = {} = {} does not divide "
           "the {} ranks: the data-parallel size (ranks / (tp x pp x cp)) must be a whole number",
           tp, pp, cp, tp * pp * cp, n);
  shape_ = {tp, pp, cp, n / (tp * pp * cp)};
  // Rank r's index along each axis.
  struct Coords {
    int tp, cp, dp, pp;
  };
  auto coords_of = [tp, cp, dp = shape_.dp](int r) {
    return Coords{r % tp, r / tp % cp, r / (tp * cp) % dp, r / (tp * cp * dp)};
  };
  auto rank_at = [tp, cp, dp = shape_.dp](int tp_c, int cp_c, int dp_c, int pp_c) {
    return ((pp_c * dp + dp_c) * cp + cp_c) * tp + tp_c;
  };
  // Color: the rank's coordinates on every other axis; key: its index on this one. Every rank
  // takes part in every split (MPI_Comm_split is collective over the world), in the same order.
  tp_ = axis(tp, [&](int r) {
    const Coords c = coords_of(r);
    return std::pair(rank_at(0, c.cp, c.dp, c.pp), c.tp);
  });
  cp_ = axis(cp, [&](int r) {
    const Coords c = coords_of(r);
    return std::pair(rank_at(c.tp, 0, c.dp, c.pp), c.cp);
  });
  dp_ = axis(shape_.dp, [&](int r) {
    const Coords c = coords_of(r);
    return std::pair(rank_at(c.tp, c.cp, 0, c.pp), c.dp);
  });
  pp_ = axis(pp, [&](int r) {
    const Coords c = coords_of(r);
    return std::pair(rank_at(c.tp, c.cp, c.dp, 0), c.pp);
  });
  model_ = axis(tp * pp, [&](int r) {
    const Coords c = coords_of(r);
    return std::pair(rank_at(0, c.cp, c.dp, 0), c.pp * tp + c.tp);
  });
  data_ = cp == 1 ? dp_ : axis(shape_.dp * cp, [&](int r) {
    const Coords c = coords_of(r);
    return std::pair(rank_at(c.tp, 0, 0, c.pp), c.dp * cp + c.cp);
  });
}

std::shared_ptr<Communicator> Mesh::axis(int size, const Communicator::SplitRule& rule) {
  if (size == world_->world_size()) return world_;
  if (size == 1) return std::make_shared<LocalCommunicator>();
  return std::shared_ptr<Communicator>(world_->split_by(rule));
}

std::string Mesh::describe() const {
  return fmt::format("{} ranks = pp {} x dp {} x cp {} x tp {}", world_->world_size(), shape_.pp,
                     shape_.dp, shape_.cp, shape_.tp);
}

void CommunicatorGroup::all_reduce_sum(Tensor t) {
  payload_bytes_ += t.numel() * int64_t(sizeof(float));
  comm_->all_reduce(t, ReduceOp::sum);
}

void CommunicatorGroup::all_gather(const Tensor& in, Tensor out,
                                   const std::vector<int64_t>& counts) {
  payload_bytes_ += out.numel() * int64_t(sizeof(float));
  comm_->all_gather(in, out, counts);
}

void CommunicatorGroup::reduce_scatter_sum(const Tensor& in, Tensor out,
                                           const std::vector<int64_t>& counts) {
  payload_bytes_ += in.numel() * int64_t(sizeof(float));
  comm_->reduce_scatter(in, out, counts, ReduceOp::sum);
}

namespace {

std::string blocks_text(const nn::TensorShard& s) {
  std::string out;
  for (const nn::IndexRange& b : s.blocks) out += fmt::format("{} {} ", b.begin, b.end);
  return out;
}

std::vector<nn::IndexRange> parse_blocks(const std::string& text) {
  std::vector<nn::IndexRange> out;
  std::istringstream in(text);
  int64_t a = 0, b = 0;
  while (in >> a >> b) out.push_back({a, b});
  return out;
}

// Writes rank k's `part` (its blocks along dim, concatenated) into `whole` (host f32).
void place_blocks(Tensor& whole, int dim, const std::vector<nn::IndexRange>& blocks,
                  const float* part) {
  const int64_t rows = whole.dim(0), cols = whole.ndim() == 2 ? whole.dim(1) : 1;
  float* dst = whole.data<float>();
  if (dim == 0) {
    for (const nn::IndexRange& b : blocks) {
      std::memcpy(dst + b.begin * cols, part, size_t(b.size() * cols) * sizeof(float));
      part += b.size() * cols;
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (const nn::IndexRange& b : blocks) {
      std::memcpy(dst + r * cols + b.begin, part, size_t(b.size()) * sizeof(float));
      part += b.size();
    }
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> gather_whole_parameters(
    const std::vector<std::pair<std::string, Tensor>>& named,
    const std::vector<nn::TensorShard>& shards, Communicator& tp) {
  TS_CHECK(named.size() == shards.size(), "gather_whole_parameters: {} parameters, {} shards",
           named.size(), shards.size());
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < named.size(); ++i) {
    const auto& [name, p] = named[i];
    const nn::TensorShard& s = shards[i];
    if (s.replicated() || tp.world_size() == 1) {
      out.emplace_back(name, p.to(Device::cpu()).to(DType::f32).contiguous());
      continue;
    }
    const Tensor local = p.to(DType::f32).contiguous();
    // Every rank's blocks and element count (parts may differ by a row).
    const std::vector<std::string> blocks = tp.all_gather_bytes(blocks_text(s));
    std::vector<int64_t> counts;
    for (double n : tp.all_gather_f64(double(local.numel()))) counts.push_back(int64_t(n));
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    Tensor all = Tensor::empty(Shape{total}, DType::f32, local.device());
    tp.all_gather(local.view(Shape{local.numel()}), all, counts);
    const Tensor host = all.to(Device::cpu());
    Tensor whole = Tensor::zeros(s.global);
    int64_t at = 0;
    for (size_t k = 0; k < counts.size(); ++k) {
      place_blocks(whole, s.dim, parse_blocks(blocks[k]), host.data<float>() + at);
      at += counts[k];
    }
    out.emplace_back(name, whole);
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> gather_stage_parameters(
    const std::vector<std::pair<std::string, Tensor>>& mine, Communicator& pp, Device device) {
  // Every rank's names and shapes ("name d0 d1 ...;" each), then each tensor from its holder.
  std::string list;
  for (const auto& [name, t] : mine) {
    list += name;
    for (int64_t d : t.shape().vec()) list += fmt::format(" {}", d);
    list += ";";
  }
  const std::vector<std::string> lists = pp.all_gather_bytes(list);
  std::map<std::string, Tensor> own(mine.begin(), mine.end());
  std::set<std::string> seen;
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t k = 0; k < lists.size(); ++k) {
    std::istringstream entries(lists[k]);
    std::string entry;
    while (std::getline(entries, entry, ';')) {
      std::istringstream fields(entry);
      std::string name;
      fields >> name;
      std::vector<int64_t> dims;
      for (int64_t d = 0; fields >> d;) dims.push_back(d);
      if (!seen.insert(name).second) continue;
      Tensor t = int(k) == pp.rank() ? own.at(name).to(DType::f32).contiguous().to(device)
                                     : Tensor::empty(Shape(dims), DType::f32, device);
      pp.broadcast(t, int(k));
      out.emplace_back(name, t.to(Device::cpu()));
    }
  }
  return out;
}

}  // namespace tessera::dist
