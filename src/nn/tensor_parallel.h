// Tensor parallelism (Megatron-LM's scheme) for the decoder: each rank of a tensor-parallel group
// holds a slice of every large weight and computes the matching slice of the layer.
//   column-parallel  q/k/v and the MLP's up (and gate) projections: each rank its heads' or its
//                    hidden units' output rows of the weight; the input is replicated (tp_copy:
//                    its gradient is summed over the group in backward);
//   row-parallel     the attention and MLP output projections: each rank the input columns of
//                    its heads / hidden units; the partial outputs are summed (tp_reduce), then
//                    the (replicated) bias is added;
//   vocabulary       the token embedding's rows (and an untied head's) split by id: the lookup
//                    gives zero rows for ids another rank holds and the outputs are summed; the
//                    head's logits stay split and the loss is ops::sharded_cross_entropy.
// Norm weights, biases of row-parallel layers and learned positions are replicated: their
// gradients are the same on every rank of the group (their inputs are), so nothing syncs them.
// The group's collectives come through TensorParallelGroup, which dist (a layer above) adapts
// from its Communicator (dist/mesh.h).
#pragma once
#include <cstdint>
#include <vector>

#include "core/shape.h"
#include "core/tensor.h"

namespace tessera::nn {

// The ranks that share one model replica's layers, and the collectives tensor parallelism needs.
// Tensors are contiguous f32 on the model's device; every rank calls the same collectives in the
// same order.
class TensorParallelGroup {
 public:
  virtual ~TensorParallelGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // t <- the sum over the group's ranks of t, in place.
  virtual void all_reduce_sum(Tensor t) = 0;
  // out (the sum of counts elements) <- every rank's `in` (counts[r] elements from rank r), in
  // rank order.
  virtual void all_gather(const Tensor& in, Tensor out, const std::vector<int64_t>& counts) = 0;
  // out (counts[rank()] elements) <- this rank's part of the sum over ranks of `in` (the sum
  // of counts elements, cut in rank order).
  virtual void reduce_scatter_sum(const Tensor& in, Tensor out,
                                  const std::vector<int64_t>& counts) = 0;
  // The equal counts of n elements from each rank.
  std::vector<int64_t> equal_counts(int64_t n) const {
    return std::vector<int64_t>(size_t(size()), n);
  }
};

// [begin, end) of a dimension.
struct IndexRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const IndexRange&) const = default;
};
// Part `part` of `parts` of n indices, as even as it gets: the first n % parts parts get one
// more (a vocabulary of 50257 splits over 4 ranks as 12565, 12564, 12564, 12564).
IndexRange even_part(int64_t n, int part, int parts);

// How a parameter is split over the group: this rank's blocks of the whole parameter along
// `dim`, concatenated in this order in the rank's tensor. dim -1: replicated (whole on every
// rank). What gathers a parameter whole (saving) and cuts it again (loading).
struct TensorShard {
  Shape global;
  int dim = -1;
  std::vector<IndexRange> blocks;
  bool replicated() const { return dim < 0; }
};

// Rows (dim 0) or columns (dim 1) `blocks` of a 2-D (or, for rows, 1-D) CPU tensor, in order:
// a new contiguous f32 tensor.
Tensor take_blocks(const Tensor& whole, int dim, const std::vector<IndexRange>& blocks);

// Sequence parallelism (Megatron-LM's, over tokens): in the regions outside attention and the
// MLP (norms, dropout, the residual stream) each rank of the group keeps only its rows of the
// flattened [B*T, C] activations, rows = even_part(B*T, rank, size). Entering a
// tensor-parallel layer all-gathers them (in place of tp_copy); leaving one reduce-scatters the
// partial sums (in place of tp_reduce): the same bytes as the all-reduce, activation memory of
// those regions / size.
struct SequenceShard {
  TensorParallelGroup* group = nullptr;
  int64_t batch = 0, seq_len = 0;  // the whole [B, T]
  IndexRange rows;                 // this rank's rows of B*T
  int64_t total() const { return batch * seq_len; }
  // Rows per rank times `width` (the collectives' element counts).
  std::vector<int64_t> counts(int64_t width) const;
};
SequenceShard sequence_shard(TensorParallelGroup& group, int64_t batch, int64_t seq_len);

// x: this rank's rows [n_r, C] -> every rank's [B, T, C]; backward: the gradient's rows
// reduce-scattered (summed over the group).
Tensor sp_gather(const Tensor& x, const SequenceShard& s);
// x: a partial sum [B, T, C] (or [B*T, C]) -> this rank's rows [n_r, C] of the sum over the
// group; backward: the gradient all-gathered.
Tensor sp_reduce_scatter(const Tensor& x, const SequenceShard& s);

// Context parallelism (Llama 3's all-gather form): the sequence of T tokens is cut into 2 x cp
// chunks of Tc; rank i of the cp group holds chunks i and 2 cp - 1 - i (an early and a late
// one, so that every rank's share of causal attention costs the same), laid out as rows
// [2B, Tc]: its first chunk's B rows, then its second's. Attention all-gathers every rank's keys
// and values into the whole sequence and runs each chunk's queries over them
// (ops::attention_window); everything else works token by token.
struct ContextShard {
  TensorParallelGroup* group = nullptr;  // the cp ranks
  int64_t batch = 0;                     // B
  int64_t chunk = 0;                     // Tc
  int chunk_index(int slot) const {      // slot 0 or 1 -> its chunk's place in the sequence
    return slot == 0 ? group->rank() : 2 * group->size() - 1 - group->rank();
  }
  int64_t first_position(int slot) const { return int64_t(chunk_index(slot)) * chunk; }
  int64_t seq_len() const { return 2 * group->size() * chunk; }
};
// This rank's keys and values [2B, Tc, W] -> the whole sequence's [B, T, W] in position order
// (every rank's chunks all-gathered); backward: the gradient's chunks reduce-scattered back.
Tensor cp_gather_sequence(const Tensor& kv, const ContextShard& s);

// The differentiable collectives (Megatron-LM's f and g), recorded by autograd.
// Forward: x itself; backward: the gradient summed over the group.
Tensor tp_copy(const Tensor& x, TensorParallelGroup& group);
// Forward: the sum over the group of x (a new f32 tensor); backward: the gradient itself.
Tensor tp_reduce(const Tensor& x, TensorParallelGroup& group);
// Each rank's x [..., n_r] (n_r = even_part(n, r, size).size()) joined along the last dim into
// [..., n] on every rank; backward: this rank's columns of the gradient. Used where a whole row
// is needed (generation's logits).
Tensor tp_gather_last_dim(const Tensor& x, TensorParallelGroup& group, int64_t n);

}  // namespace tessera::nn
