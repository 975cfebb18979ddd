// Batches for training and evaluation.
//
// Determinism: every random choice is a stateless function of (seed, offset) through
// tessera::Generator, so the same seed gives the same batches on any machine and a batcher's
// state is two integers a checkpoint can store (SamplerState).
//
// Data parallelism: with world_size N, rank r materialises rows [r*B/N, (r+1)*B/N) of the SAME
// global batch of B rows; every rank advances its generator by the whole batch, so the union of
// the ranks' rows is exactly what a single process would draw.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/idx.h"
#include "data/prefetch.h"

namespace tessera::data {

// A batcher's position: restoring it with set_state() makes the batcher continue exactly there.
struct SamplerState {
  uint64_t seed = 0;
  uint64_t offset = 0;
  bool operator==(const SamplerState&) const = default;
};

// The rows [begin, end) of a global batch that one rank holds.
struct RowRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
RowRange rank_rows(int64_t global_batch, int rank, int world_size);

struct TokenBatch {
  Tensor x;  // i32 [rows, T]: inputs
  Tensor y;  // i32 [rows, T]: targets, y[b, t] = the token after x[b, t]
  // Each row's sample: the token offset its window starts at (sample accounting,
  // train/sample_account.h).
  std::vector<int64_t> sample_ids;
  // The batcher's state right after drawing this batch. A trainer checkpoints the state of the
  // last batch it consumed (not the batcher's own, which a Prefetcher runs ahead of).
  SamplerState next_state;
};

// n token ids drawn uniformly from [0, vocab_size), i32 [n], the same for the same seed: a
// corpus for benchmarks and plans (data.kind = "random"), where the values do not matter.
Tensor random_tokens(int64_t vocab_size, int64_t n, uint64_t seed);

// Random windows of seq_len + 1 consecutive tokens from a u16 or i32 [n] token array.
class TokenBatcher {
 public:
  TokenBatcher(Tensor tokens, int64_t batch_size, int64_t seq_len, uint64_t seed, int rank = 0,
               int world_size = 1);

  TokenBatch next();
  SamplerState state() const { return {gen_.seed(), gen_.offset()}; }
  void set_state(const SamplerState& s) { gen_.set_state(s.seed, s.offset); }

  int64_t global_batch_size() const { return batch_; }
  int64_t local_batch_size() const { return rows_.size(); }
  int64_t seq_len() const { return seq_; }

 private:
  Tensor tokens_;
  int64_t batch_, seq_;
  RowRange rows_;
  Generator gen_;
};

struct ImageBatch {
  Tensor images;                    // f32 [rows, 1, H, W]
  Tensor labels;                    // i32 [rows]
  std::vector<int64_t> sample_ids;  // each row's image: its index in the dataset
  SamplerState next_state;          // as in TokenBatch
};

// Shuffled epochs over an ImageDataset: each epoch is a fresh permutation (a function of seed
// and epoch number) cut into batches of batch_size; the last partial batch of an epoch is
// dropped so every batch has the same shape. State offset = global batches drawn so far.
class ImageBatcher {
 public:
  ImageBatcher(ImageDataset data, int64_t batch_size, uint64_t seed, int rank = 0,
               int world_size = 1);

  ImageBatch next();
  SamplerState state() const { return {seed_, position_}; }
  void set_state(const SamplerState& s);

  int64_t batches_per_epoch() const { return data_.size() / batch_; }
  int64_t epoch() const { return int64_t(position_) / batches_per_epoch(); }
  int64_t local_batch_size() const { return rows_.size(); }

 private:
  const std::vector<int64_t>& permutation(int64_t epoch);

  ImageDataset data_;
  int64_t batch_;
  RowRange rows_;
  uint64_t seed_;
  uint64_t position_ = 0;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Evaluation: consecutive, non-overlapping windows over a token split. Batch i, row j starts at
// token (i*B + j) * T, so num_batches() batches cover the split once (only whole batches, as the
// loss of a partial batch would be weighted differently). max_batches > 0 caps the count.
class SequentialTokenBatches {
 public:
  SequentialTokenBatches(Tensor tokens, int64_t batch_size, int64_t seq_len,
                         int64_t max_batches = 0, int rank = 0, int world_size = 1);
  int64_t num_batches() const { return num_batches_; }
  TokenBatch batch(int64_t i) const;

 private:
  Tensor tokens_;
  int64_t batch_, seq_, num_batches_;
  RowRange rows_;
};

// Evaluation over every image in order; the last batch may be smaller, so accuracy counts all
// of them. Rank r takes rows rank_rows(rows in that batch, r, N) of each batch.
class SequentialImageBatches {
 public:
  SequentialImageBatches(ImageDataset data, int64_t batch_size, int rank = 0, int world_size = 1);
  int64_t num_batches() const { return (data_.size() + batch_ - 1) / batch_; }
  ImageBatch batch(int64_t i) const;

 private:
  ImageDataset data_;
  int64_t batch_;
  int rank_, world_;
};

}  // namespace tessera::data
