#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace tessera::data {

namespace {

void check_tokens(const Tensor& tokens, const char* who) {
  TS_CHECK(tokens.defined() && (tokens.dtype() == DType::u16 || tokens.dtype() == DType::i32) &&
               tokens.ndim() == 1 && tokens.is_contiguous(),
           "{}: expected contiguous u16 or i32 [n] tokens, got {}", who,
           tokens.defined() ? tokens.desc() : std::string("an undefined tensor"));
}

void check_dataset(const ImageDataset& d, const char* who) {
  TS_CHECK(d.images.defined() && d.labels.defined() && d.images.ndim() == 4 &&
               d.images.dtype() == DType::f32 && d.labels.dtype() == DType::i32 &&
               d.labels.ndim() == 1 && d.images.dim(0) == d.labels.dim(0),
           "{}: expected images f32 [n, C, H, W] and labels i32 [n], got {} and {}", who,
           d.images.defined() ? d.images.desc() : "undefined",
           d.labels.defined() ? d.labels.desc() : "undefined");
}

// Copies window [start, start + T] into row r of x (first T tokens) and y (last T).
template <class Token>
void fill_row(const Token* tok, int64_t start, int64_t T, int32_t* x, int32_t* y) {
  for (int64_t t = 0; t < T; ++t) {
    x[t] = int32_t(tok[start + t]);
    y[t] = int32_t(tok[start + t + 1]);
  }
}

// fill_row on u16 (GPT-2 vocabularies) or i32 (larger ones) tokens.
void fill_row(const Tensor& tokens, int64_t start, int64_t T, int32_t* x, int32_t* y) {
  if (tokens.dtype() == DType::u16) {
    fill_row(tokens.data<uint16_t>(), start, T, x, y);
  } else {
    fill_row(tokens.data<int32_t>(), start, T, x, y);
  }
}

// Copies the listed samples of a dataset into a batch.
ImageBatch gather(const ImageDataset& d, const int64_t* index, int64_t rows) {
  const Shape& s = d.images.shape();
  const int64_t per = s[1] * s[2] * s[3];
  ImageBatch b;
  b.images = Tensor::empty({rows, s[1], s[2], s[3]}, DType::f32);
  b.labels = Tensor::empty({rows}, DType::i32);
  const float* src = d.images.data<float>();
  const int32_t* lab = d.labels.data<int32_t>();
  float* dst = b.images.data<float>();
  int32_t* out = b.labels.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * per, src + index[r] * per, size_t(per) * sizeof(float));
    out[r] = lab[index[r]];
  }
  b.sample_ids.assign(index, index + rows);
  return b;
}

}  // namespace

RowRange rank_rows(int64_t global_batch, int rank, int world_size) {
  TS_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
           "rank_rows: rank {} of world size {} is out of range", rank, world_size);
  TS_CHECK(global_batch >= world_size,
           "rank_rows: global batch {} is smaller than world size {}; every rank needs a row",
           global_batch, world_size);
  return {rank * global_batch / world_size, (rank + 1) * global_batch / world_size};
}

Tensor random_tokens(int64_t vocab_size, int64_t n, uint64_t seed) {
  TS_CHECK(vocab_size > 0 && n > 0, "random_tokens: vocabulary {} and count {} must be positive",
           vocab_size, n);
  Tensor t = Tensor::empty(Shape{n}, DType::i32);
  int32_t* ids = t.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    ids[i] = int32_t(std::min<double>(
        double(vocab_size - 1), Generator::uniform01(seed, uint64_t(i)) * double(vocab_size)));
  return t;
}

TokenBatcher::TokenBatcher(Tensor tokens, int64_t batch_size, int64_t seq_len, uint64_t seed,
                           int rank, int world_size)
    : tokens_(std::move(tokens)), batch_(batch_size), seq_(seq_len), gen_(seed) {
  check_tokens(tokens_, "TokenBatcher");
  TS_CHECK(batch_size > 0 && seq_len > 0,
           "TokenBatcher: batch size {} and seq_len {} must be positive", batch_size, seq_len);
  TS_CHECK(tokens_.dim(0) > seq_len,
           "TokenBatcher: {} tokens are too few for one window of seq_len + 1 = {}", tokens_.dim(0),
           seq_len + 1);
  rows_ = rank_rows(batch_size, rank, world_size);
}

TokenBatch TokenBatcher::next() {
  // Valid window starts are [0, n - T - 1]: the window's last target is token start + T.
  const uint64_t starts = uint64_t(tokens_.dim(0) - seq_);
  const uint64_t seed = gen_.seed(), base = gen_.advance(uint64_t(batch_));
  TokenBatch b;
  b.x = Tensor::empty({rows_.size(), seq_}, DType::i32);
  b.y = Tensor::empty({rows_.size(), seq_}, DType::i32);
  int32_t* x = b.x.data<int32_t>();
  int32_t* y = b.y.data<int32_t>();
  for (int64_t r = rows_.begin; r < rows_.end; ++r) {
    // Modulo bias is at most starts / 2^64: negligible for any corpus.
    const int64_t start = int64_t(Generator::bits(seed, base + uint64_t(r)) % starts);
    const int64_t local = r - rows_.begin;
    fill_row(tokens_, start, seq_, x + local * seq_, y + local * seq_);
    b.sample_ids.push_back(start);
  }
  b.next_state = state();
  return b;
}

ImageBatcher::ImageBatcher(ImageDataset data, int64_t batch_size, uint64_t seed, int rank,
                           int world_size)
    : data_(std::move(data)), batch_(batch_size), seed_(seed) {
  check_dataset(data_, "ImageBatcher");
  TS_CHECK(batch_size > 0 && batch_size <= data_.size(),
           "ImageBatcher: batch size {} must be in [1, dataset size {}]", batch_size, data_.size());
  rows_ = rank_rows(batch_size, rank, world_size);
}

void ImageBatcher::set_state(const SamplerState& s) {
  seed_ = s.seed;
  position_ = s.offset;
  cached_epoch_ = -1;  // the permutation depends on the seed
}

const std::vector<int64_t>& ImageBatcher::permutation(int64_t epoch) {
  if (epoch == cached_epoch_) return perm_;
  // Fisher-Yates; epoch e uses generator draws [e*n, (e+1)*n), so epochs are independent.
  const int64_t n = data_.size();
  perm_.resize(size_t(n));
  std::iota(perm_.begin(), perm_.end(), int64_t(0));
  const uint64_t base = uint64_t(epoch) * uint64_t(n);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = int64_t(Generator::bits(seed_, base + uint64_t(i)) % uint64_t(i + 1));
    std::swap(perm_[size_t(i)], perm_[size_t(j)]);
  }
  cached_epoch_ = epoch;
  return perm_;
}

ImageBatch ImageBatcher::next() {
  const int64_t per_epoch = batches_per_epoch();
  const int64_t e = int64_t(position_) / per_epoch, k = int64_t(position_) % per_epoch;
  const std::vector<int64_t>& perm = permutation(e);
  ImageBatch b = gather(data_, perm.data() + k * batch_ + rows_.begin, rows_.size());
  ++position_;
  b.next_state = state();
  return b;
}

SequentialTokenBatches::SequentialTokenBatches(Tensor tokens, int64_t batch_size, int64_t seq_len,
                                               int64_t max_batches, int rank, int world_size)
    : tokens_(std::move(tokens)), batch_(batch_size), seq_(seq_len) {
  check_tokens(tokens_, "SequentialTokenBatches");
  TS_CHECK(batch_size > 0 && seq_len > 0,
           "SequentialTokenBatches: batch size {} and seq_len {} must be positive", batch_size,
           seq_len);
  rows_ = rank_rows(batch_size, rank, world_size);
  // Windows need T + 1 tokens but only advance by T (the last target is the next input).
  const int64_t windows = (tokens_.dim(0) - 1) / seq_len;
  num_batches_ = windows / batch_size;
  TS_CHECK(num_batches_ > 0,
           "SequentialTokenBatches: {} tokens hold {} windows of seq_len {}, fewer than one "
           "batch of {}; expected at least {} tokens",
           tokens_.dim(0), windows, seq_len, batch_size, batch_size * seq_len + 1);
  if (max_batches > 0) num_batches_ = std::min(num_batches_, max_batches);
}

TokenBatch SequentialTokenBatches::batch(int64_t i) const {
  TS_CHECK(i >= 0 && i < num_batches_, "SequentialTokenBatches: batch {} out of range [0, {})", i,
           num_batches_);
  TokenBatch b;
  b.x = Tensor::empty({rows_.size(), seq_}, DType::i32);
  b.y = Tensor::empty({rows_.size(), seq_}, DType::i32);
  for (int64_t r = rows_.begin; r < rows_.end; ++r) {
    const int64_t local = r - rows_.begin;
    fill_row(tokens_, (i * batch_ + r) * seq_, seq_, b.x.data<int32_t>() + local * seq_,
             b.y.data<int32_t>() + local * seq_);
    b.sample_ids.push_back((i * batch_ + r) * seq_);
  }
  return b;
}

SequentialImageBatches::SequentialImageBatches(ImageDataset data, int64_t batch_size, int rank,
                                               int world_size)
    : data_(std::move(data)), batch_(batch_size), rank_(rank), world_(world_size) {
  check_dataset(data_, "SequentialImageBatches");
  TS_CHECK(batch_size > 0, "SequentialImageBatches: batch size {} must be positive", batch_size);
  // The smallest batch (the last) must still give every rank a row.
  const int64_t last = data_.size() - (num_batches() - 1) * batch_;
  rank_rows(std::min(batch_, last), rank, world_size);
}

ImageBatch SequentialImageBatches::batch(int64_t i) const {
  TS_CHECK(i >= 0 && i < num_batches(), "SequentialImageBatches: batch {} out of range [0, {})", i,
           num_batches());
  const int64_t begin = i * batch_, rows = std::min(batch_, data_.size() - begin);
  const RowRange mine = rank_rows(rows, rank_, world_);
  std::vector<int64_t> index(size_t(mine.size()));
  std::iota(index.begin(), index.end(), begin + mine.begin);
  return gather(data_, index.data(), mine.size());
}

}  // namespace tessera::data
