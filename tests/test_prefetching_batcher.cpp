// PrefetchingBatcher (data/prefetch.h): the training tasks' batches made ahead on a worker. Its
// batches must be the plain batcher's, its state() the position after the last batch handed
// out (what a checkpoint saves; the worker runs ahead of it), and set_state() must resume
// exactly there, also while the worker has batches queued.
#include <gtest/gtest.h>

#include <numeric>

#include "data/loader.h"

using namespace tessera;
using namespace tessera::data;

namespace {

// Token i == i, so a window's values name where it was drawn from.
Tensor counting_tokens(int n) {
  std::vector<int32_t> v(size_t(n), 0);
  std::iota(v.begin(), v.end(), 0);
  return Tensor::from_ints(v, Shape{n}).to(DType::u16);
}

// Image i has every pixel equal to i and label i % 10.
ImageDataset counting_images(int n) {
  std::vector<float> pixels;
  std::vector<int32_t> labels;
  for (int i = 0; i < n; ++i) {
    pixels.insert(pixels.end(), 4, float(i));
    labels.push_back(i % 10);
  }
  return {Tensor::from_vector(pixels, Shape{n, 1, 2, 2}), Tensor::from_ints(labels, Shape{n}), 10};
}

}  // namespace

TEST(PrefetchingBatcher, TokenBatchesAndPositionsAreThePlainBatchers) {
  const Tensor tokens = counting_tokens(3000);
  TokenBatcher plain(tokens, 4, 8, 21);
  PrefetchingBatcher<TokenBatcher> ahead(TokenBatcher(tokens, 4, 8, 21));
  EXPECT_EQ(ahead.state(), plain.state());  // before the first batch (no worker yet)
  for (int i = 0; i < 8; ++i) {
    const TokenBatch want = plain.next(), got = ahead.next();
    ASSERT_EQ(got.x.to_vector(), want.x.to_vector()) << "batch " << i;
    ASSERT_EQ(got.y.to_vector(), want.y.to_vector()) << "batch " << i;
    // The position after this batch, however far the worker has run ahead.
    EXPECT_EQ(ahead.state(), plain.state()) << "batch " << i;
  }
}

TEST(PrefetchingBatcher, SetStateResumesRightAfterTheSavedBatch) {
  const Tensor tokens = counting_tokens(3000);
  PrefetchingBatcher<TokenBatcher> run(TokenBatcher(tokens, 2, 8, 5, 1, 2));  // rank 1 of 2
  for (int i = 0; i < 3; ++i) run.next();
  const SamplerState saved = run.state();
  std::vector<std::vector<float>> after;
  for (int i = 0; i < 4; ++i) after.push_back(run.next().x.to_vector());

  // Back to the saved position while the worker holds batches made past it.
  run.set_state(saved);
  EXPECT_EQ(run.state(), saved);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(run.next().x.to_vector(), after[size_t(i)]) << i;

  // A new run resumed from the saved position (a checkpoint restored in another process).
  PrefetchingBatcher<TokenBatcher> resumed(TokenBatcher(tokens, 2, 8, 5, 1, 2));
  resumed.set_state(saved);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(resumed.next().x.to_vector(), after[size_t(i)]) << i;
}

TEST(PrefetchingBatcher, ImageBatchesAcrossEpochs) {
  // 10 images in batches of 4: 2 batches an epoch, so 5 batches cross two epoch boundaries.
  ImageBatcher plain(counting_images(10), 4, 9);
  PrefetchingBatcher<ImageBatcher> ahead(ImageBatcher(counting_images(10), 4, 9));
  const SamplerState start = ahead.state();
  std::vector<float> first;
  for (int i = 0; i < 5; ++i) {
    const ImageBatch want = plain.next(), got = ahead.next();
    ASSERT_EQ(got.images.to_vector(), want.images.to_vector()) << "batch " << i;
    ASSERT_EQ(got.labels.to_vector(), want.labels.to_vector()) << "batch " << i;
    EXPECT_EQ(ahead.state(), plain.state()) << "batch " << i;
    if (i == 0) first = got.images.to_vector();
  }
  ahead.set_state(start);
  EXPECT_EQ(ahead.next().images.to_vector(), first);
}
