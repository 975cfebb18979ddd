// The process mesh: the world's ranks as a grid pp x dp x cp x tp, with a communicator for each
// axis (parallel.tp, parallel.pp, parallel.cp; dp = world / (tp x pp x cp)). tp varies fastest,
// so a tensor-parallel group is consecutive ranks (one node's GPUs under mpirun, Slurm and
// torchrun, whose ranks fill a node before the next); pp varies slowest, as Megatron-LM and
// torchtitan order their meshes. World rank = ((pp_i * dp + dp_i) * cp + cp_i) * tp + tp_i.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "nn/tensor_parallel.h"

namespace tessera::dist {

struct MeshShape {
  int tp = 1, pp = 1, cp = 1;
  int dp = 1;  // derived: world / (tp pp cp)
};

class Mesh {
 public:
  // Splits `world` into the axes' communicators (every rank of world calls it). Throws an Error
  // naming parallel.tp / pp / cp when they are not positive or their product does not divide
  // the world size.
  Mesh(std::shared_ptr<Communicator> world, int tp, int pp = 1, int cp = 1);

  const MeshShape& shape() const { return shape_; }
  Communicator& world() const { return *world_; }
  // The ranks that differ from this one only along an axis, ordered by that axis' index (a
  // one-rank communicator when the axis has size 1; the world itself when it spans it).
  const std::shared_ptr<Communicator>& tp() const { return tp_; }
  const std::shared_ptr<Communicator>& pp() const { return pp_; }
  const std::shared_ptr<Communicator>& cp() const { return cp_; }
  const std::shared_ptr<Communicator>& dp() const { return dp_; }
  // The ranks of this rank's model replica (same dp and cp coordinates: its tp x pp ranks),
  // ordered pp-major: what the global gradient norm sums over.
  const std::shared_ptr<Communicator>& model() const { return model_; }
  // The ranks holding the same part of the model (same tp and pp coordinates: its dp x cp
  // ranks), ordered dp-major: what averages the gradients.
  const std::shared_ptr<Communicator>& data() const { return data_; }
  // This rank's index along each axis.
  int tp_rank() const { return tp_->rank(); }
  int pp_rank() const { return pp_->rank(); }
  int cp_rank() const { return cp_->rank(); }
  int dp_rank() const { return dp_->rank(); }
  // World rank r's pipeline stage.
  int pp_rank_of(int r) const { return r / (shape_.tp * shape_.cp * shape_.dp); }
  // "8 ranks = pp 1 x dp 2 x cp 1 x tp 4" (start-up line).
  std::string describe() const;

 private:
  // The communicator of one axis of `size` ranks: rule(r) is world rank r's (color, key).
  std::shared_ptr<Communicator> axis(int size, const Communicator::SplitRule& rule);

  MeshShape shape_;
  std::shared_ptr<Communicator> world_, tp_, pp_, cp_, dp_, model_, data_;
};

// nn's view of a communicator for tensor parallelism (nn/tensor_parallel.h).
class CommunicatorGroup final : public nn::TensorParallelGroup {
 public:
  explicit CommunicatorGroup(std::shared_ptr<Communicator> comm) : comm_(std::move(comm)) {}
  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->world_size(); }
  void all_reduce_sum(Tensor t) override;
  void all_gather(const Tensor& in, Tensor out, const std::vector<int64_t>& counts) override;
  void reduce_scatter_sum(const Tensor& in, Tensor out,
                          const std::vector<int64_t>& counts) override;
  // Bytes of the collectives' whole tensors so far (an all-reduce's tensor, an all-gather's
  // output, a reduce-scatter's input): what the metrics report per step. A ring moves about
  // 2 (n-1)/n of that per rank for an all-reduce, (n-1)/n for the others.
  int64_t payload_bytes() const { return payload_bytes_; }

 private:
  std::shared_ptr<Communicator> comm_;
  int64_t payload_bytes_ = 0;
};

// Every parameter whole, on the host, in `named` order: one sharded over `tp` (shards[i], as
// nn::Decoder::tensor_shards gives them) is gathered from every rank's blocks; a replicated one
// is copied. Collective over tp (every rank gets the whole tensors).
std::vector<std::pair<std::string, Tensor>> gather_whole_parameters(
    const std::vector<std::pair<std::string, Tensor>>& named,
    const std::vector<nn::TensorShard>& shards, Communicator& tp);

// Pipeline parallelism: every stage's parameters on every rank of `pp`, from each rank's own
// (host tensors, named; a name several ranks hold, a tied embedding, is taken from the first).
// Collective over pp; tensors travel through `device` (the communicator's).
std::vector<std::pair<std::string, Tensor>> gather_stage_parameters(
    const std::vector<std::pair<std::string, Tensor>>& mine, Communicator& pp, Device device);

}  // namespace tessera::dist
