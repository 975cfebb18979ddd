// Dataset readers and batchers: IDX / shard / text round trips, the error raised for each kind
// of corrupt input, the real Fashion-MNIST test split, and batch determinism, rank splits and
// prefetching.
#include <gtest/gtest.h>

#include <unistd.h>
#include "gradcheck.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "data/file_io.h"
#include "data/idx.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/text.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::expect_error;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / fmt::format("tessera_test_data_{}_{}_{}", ::getpid(),
                                                    info ? info->name() : "x", counter++);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::vector<uint8_t> raw_bytes(const std::string& path) {
  return read_file_bytes(path, "test");
}

// n images of rows x cols whose pixels vary with image and position.
std::vector<uint8_t> image_bytes(int64_t n, int64_t rows, int64_t cols) {
  std::vector<uint8_t> v(size_t(n * rows * cols));
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t((i * 37 + i / 7) % 256);
  return v;
}

std::vector<int32_t> ints(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return {p, p + t.numel()};
}

Tensor arange_u16(int64_t n) {
  Tensor t = Tensor::empty({n}, DType::u16);
  for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = uint16_t(i);
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------- IDX

TEST(Idx, RoundTripsPlainAndGzip) {
  TempDir dir;
  const auto pixels = image_bytes(3, 4, 5);
  for (bool gz : {false, true}) {
    const std::string p = dir.file(gz ? "img.gz" : "img");
    write_idx(p, kIdxImagesMagic, {3, 4, 5}, pixels, gz);
    EXPECT_EQ(looks_gzipped(raw_bytes(p)), gz);
    IdxArray a = read_idx(p, kIdxImagesMagic);
    EXPECT_EQ(a.magic, kIdxImagesMagic);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 4, 5}));
    EXPECT_EQ(a.data, pixels);
  }
}

TEST(Idx, DatasetIsNormalisedWithLabels) {
  TempDir dir;
  const auto pixels = image_bytes(6, 2, 3);
  const std::vector<uint8_t> labels = {0, 9, 3, 3, 1, 7};
  write_idx(dir.file("i.gz"), kIdxImagesMagic, {6, 2, 3}, pixels, true);
  write_idx(dir.file("l"), kIdxLabelsMagic, {6}, labels, false);
  const float mean = 0.25f, std = 0.5f;
  ImageDataset ds = load_idx_dataset(dir.file("i.gz"), dir.file("l"), 10, mean, std);
  ASSERT_EQ(ds.images.shape(), (Shape{6, 1, 2, 3}));
  ASSERT_EQ(ds.labels.shape(), (Shape{6}));
  EXPECT_EQ(ds.size(), 6);
  const float* img = ds.images.data<float>();
  for (size_t i = 0; i < pixels.size(); ++i)
    ASSERT_NEAR(img[i], (pixels[i] / 255.0 - mean) / std, 1e-6) << i;
  EXPECT_EQ(ints(ds.labels), (std::vector<int32_t>(labels.begin(), labels.end())));
}

TEST(Idx, CorruptFilesNameTheFileAndField) {
  TempDir dir;
  const auto pixels = image_bytes(3, 4, 5);
  const std::string img = dir.file("images"), lab = dir.file("labels");
  write_idx(img, kIdxImagesMagic, {3, 4, 5}, pixels, false);
  write_idx(lab, kIdxLabelsMagic, {3}, {1, 2, 3}, false);

  // A labels file where images are expected.
  expect_error([&] { read_idx(lab, kIdxImagesMagic); }, {lab, "magic", "0x00000801", "0x00000803"});
  expect_error([&] { read_idx(dir.file("absent"), kIdxImagesMagic); }, {"absent", "not found"});

  // Truncated payload (plain and gzip): the header promises 60 bytes.
  std::vector<uint8_t> bytes = raw_bytes(img);
  bytes.resize(bytes.size() - 7);
  write_file_bytes(dir.file("short"), bytes);
  write_file_bytes(dir.file("short.gz"), bytes, true);
  for (const std::string& p : {dir.file("short"), dir.file("short.gz")})
    expect_error([&] { read_idx(p, kIdxImagesMagic); },
                 {p, "payload has 53 bytes", "[3, 4, 5]", "need 60", "truncated"});

  // Oversized payload.
  bytes = raw_bytes(img);
  bytes.push_back(0), bytes.push_back(0);
  write_file_bytes(dir.file("long"), bytes);
  expect_error([&] { read_idx(dir.file("long"), kIdxImagesMagic); },
               {dir.file("long"), "payload has 62 bytes", "need 60", "2 unexpected trailing"});

  // Header cut inside the dims.
  bytes.resize(9);
  write_file_bytes(dir.file("hdr"), bytes);
  expect_error([&] { read_idx(dir.file("hdr"), kIdxImagesMagic); },
               {dir.file("hdr"), "header truncated", "16-byte", "9 bytes"});

  // A gzip stream cut in half is reported as such, not read as short data.
  std::vector<uint8_t> gz_bytes;
  write_idx(dir.file("full.gz"), kIdxImagesMagic, {3, 4, 5}, pixels, true);
  gz_bytes = raw_bytes(dir.file("full.gz"));
  gz_bytes.resize(gz_bytes.size() / 2);
  write_file_bytes(dir.file("cut.gz"), gz_bytes);
  expect_error([&] { read_idx(dir.file("cut.gz"), kIdxImagesMagic); },
               {dir.file("cut.gz"), "gzip", "truncated"});

  // A gzip bomb: the header promises one byte of payload, the stream inflates to 16 MiB of
  // zeros. Refused after the first inflated chunk, naming the limit, instead of inflating it all.
  std::vector<uint8_t> bomb(16 + (16u << 20), 0);
  const uint8_t header[16] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1};
  std::copy(header, header + 16, bomb.begin());
  write_file_bytes(dir.file("bomb.gz"), bomb, true);
  EXPECT_LT(raw_bytes(dir.file("bomb.gz")).size(), 1u << 20);
  expect_error([&] { read_idx(dir.file("bomb.gz"), kIdxImagesMagic); },
               {dir.file("bomb.gz"), "inflates to more than the 17 bytes its header allows"});
  // The same header with a foreign magic is refused for its magic while inflating.
  bomb[3] = 1;
  write_file_bytes(dir.file("bomb1.gz"), bomb, true);
  expect_error([&] { read_idx(dir.file("bomb1.gz"), kIdxImagesMagic); },
               {dir.file("bomb1.gz"), "bad magic", "0x00000801"});

  // Label count differs from image count.
  write_idx(dir.file("two"), kIdxLabelsMagic, {2}, {1, 2}, false);
  expect_error([&] { load_idx_dataset(img, dir.file("two"), 10, 0.f, 1.f); },
               {dir.file("two"), img, "label count 2", "image count 3"});

  // A label out of range.
  write_idx(dir.file("big"), kIdxLabelsMagic, {3}, {1, 12, 3}, false);
  expect_error([&] { load_idx_dataset(img, dir.file("big"), 10, 0.f, 1.f); },
               {dir.file("big"), "label 12", "index 1", "< 10"});
}

TEST(Idx, RealFashionMnistTestSplit) {
  if (!fs::exists(kFashionMnistSystemDir))
    GTEST_SKIP() << kFashionMnistSystemDir
                 << " is absent (Debian package dataset-fashion-mnist not installed)";
  ImageDataset ds = load_fashion_mnist(kFashionMnistSystemDir, "test");
  ASSERT_EQ(ds.images.shape(), (Shape{10000, 1, 28, 28}));
  ASSERT_EQ(ds.labels.shape(), (Shape{10000}));
  std::map<int32_t, int> histogram;
  for (int32_t l : ints(ds.labels)) histogram[l]++;
  ASSERT_EQ(histogram.size(), 10u);
  for (auto [label, count] : histogram) EXPECT_EQ(count, 1000) << "label " << label;

  // Normalised with the training statistics, the test pixels have mean ~0 and std ~1, and the
  // extremes are the images of raw 0 and 255.
  const float* p = ds.images.data<float>();
  double sum = 0, sq = 0;
  float lo = p[0], hi = p[0];
  for (int64_t i = 0; i < ds.images.numel(); ++i) {
    sum += p[i], sq += double(p[i]) * p[i];
    lo = std::min(lo, p[i]), hi = std::max(hi, p[i]);
  }
  const double mean = sum / double(ds.images.numel());
  const double sd = std::sqrt(sq / double(ds.images.numel()) - mean * mean);
  EXPECT_LT(std::abs(mean), 0.05);
  EXPECT_NEAR(sd, 1.0, 0.05);
  EXPECT_FLOAT_EQ(lo, (0.f - kFashionMnistMean) / kFashionMnistStd);
  EXPECT_FLOAT_EQ(hi, (1.f - kFashionMnistMean) / kFashionMnistStd);
  expect_error([] { load_fashion_mnist(kFashionMnistSystemDir, "valid"); }, {"valid", "split"});
}

// -------------------------------------------------------------------------------------- shards

TEST(Shard, RoundTripAndHeaderLayout) {
  TempDir dir;
  Tensor tok = Tensor::empty({1000}, DType::u16);
  for (int i = 0; i < 1000; ++i) tok.data<uint16_t>()[i] = uint16_t(i * 65521 + 3);  // all bits
  const std::string p = dir.file("s.bin");
  write_token_shard(p, tok);
  const auto bytes = raw_bytes(p);
  ASSERT_EQ(bytes.size(), 1024u + 2000u);
  auto le32 = [&](size_t i) {
    return int32_t(bytes[4 * i] | bytes[4 * i + 1] << 8 | bytes[4 * i + 2] << 16 |
                   uint32_t(bytes[4 * i + 3]) << 24);
  };
  EXPECT_EQ(le32(0), 20240520);
  EXPECT_EQ(le32(1), 1);
  EXPECT_EQ(le32(2), 1000);
  for (size_t i = 3; i < 256; ++i) ASSERT_EQ(le32(i), 0);
  EXPECT_EQ(bytes[1024 + 2], uint8_t(tok.data<uint16_t>()[1]));  // little-endian tokens
  EXPECT_EQ(bytes[1024 + 3], uint8_t(tok.data<uint16_t>()[1] >> 8));

  Tensor back = read_token_shard(p);
  ASSERT_EQ(back.shape(), (Shape{1000}));
  ASSERT_EQ(back.dtype(), DType::u16);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(back.data<uint16_t>()[i], tok.data<uint16_t>()[i]);

  write_token_shard(dir.file("empty.bin"), Tensor::empty({0}, DType::u16));
  EXPECT_EQ(read_token_shard(dir.file("empty.bin")).numel(), 0);
}

TEST(Shard, CorruptShardsNameTheFileAndField) {
  TempDir dir;
  const std::string good = dir.file("good.bin");
  write_token_shard(good, arange_u16(100));
  const auto bytes = raw_bytes(good);
  auto patched = [&](const std::string& name, size_t field, int32_t v) {
    auto b = bytes;
    for (int i = 0; i < 4; ++i) b[4 * field + i] = uint8_t(uint32_t(v) >> (8 * i));
    write_file_bytes(dir.file(name), b);
    return dir.file(name);
  };
  const std::string magic = patched("magic.bin", 0, 20240521);
  expect_error([&] { read_token_shard(magic); }, {magic, "magic", "header[0]", "20240521"});
  const std::string version = patched("version.bin", 1, 2);
  expect_error([&] { read_token_shard(version); }, {version, "version", "header[1]", "2"});
  const std::string count = patched("count.bin", 2, 110);
  expect_error([&] { read_token_shard(count); },
               {count, "token count", "header[2]", "110", "1244", "found 1224", "truncated"});
  const std::string small = patched("small.bin", 2, 90);
  expect_error([&] { read_token_shard(small); }, {small, "header[2]", "90", "trailing"});
  const std::string negative = patched("neg.bin", 2, -5);
  expect_error([&] { read_token_shard(negative); }, {negative, "header[2]", "-5", "negative"});

  auto cut = bytes;
  cut.resize(500);
  write_file_bytes(dir.file("cut.bin"), cut);
  expect_error([&] { read_token_shard(dir.file("cut.bin")); },
               {dir.file("cut.bin"), "header", "500"});
  expect_error([&] { read_token_shard(dir.file("nope.bin")); }, {"nope.bin", "not found"});
}

TEST(Shard, Uint32ShardsAreLlmcsLlama3Layout) {
  TempDir dir;
  Tensor tok = Tensor::empty({300}, DType::i32);
  for (int i = 0; i < 300; ++i) tok.data<int32_t>()[i] = i * 7919 + 65530;  // past uint16
  const std::string p = dir.file("wide.bin");
  write_token_shard(p, tok);
  const auto bytes = raw_bytes(p);
  ASSERT_EQ(bytes.size(), 1024u + 4 * 300u);
  auto le32 = [&](size_t i) {
    return int32_t(bytes[i] | bytes[i + 1] << 8 | bytes[i + 2] << 16 |
                   uint32_t(bytes[i + 3]) << 24);
  };
  EXPECT_EQ(le32(0), 20240801);
  EXPECT_EQ(le32(4), 7);
  EXPECT_EQ(le32(8), 300);
  EXPECT_EQ(le32(1024 + 4), 7919 + 65530);
  const Tensor back = read_token_shard(p);
  ASSERT_EQ(back.dtype(), DType::i32);
  EXPECT_EQ(ints(back), ints(tok));
  EXPECT_EQ(max_token_id(back), 299 * 7919 + 65530);

  auto patched = bytes;
  patched[1024 + 4 * 5 + 3] = 0x80;  // token 5 >= 2^31
  write_file_bytes(dir.file("huge.bin"), patched);
  expect_error([&] { read_token_shard(dir.file("huge.bin")); },
               {dir.file("huge.bin"), "position 5", "2^31"});
  patched = bytes;
  patched[4] = 1;  // a uint32 magic with the uint16 version
  write_file_bytes(dir.file("mixed.bin"), patched);
  expect_error([&] { read_token_shard(dir.file("mixed.bin")); },
               {dir.file("mixed.bin"), "header[1]", "expected 7", "uint32"});
}

TEST(Shard, ManyShardsReadAsOneStream) {
  TempDir dir;
  fs::create_directories(dir.file("d"));
  write_token_shard(dir.file("d/x_train_000001.bin"), arange_u16(5));
  write_token_shard(dir.file("d/x_train_000000.bin"), arange_u16(3));
  Tensor wide = Tensor::empty({2}, DType::i32);
  wide.data<int32_t>()[0] = 70000, wide.data<int32_t>()[1] = 1;
  write_token_shard(dir.file("d/x_val_000000.bin"), wide);

  const Tensor train = read_token_shards(dir.file("d/x_train_*.bin"));
  ASSERT_EQ(train.dtype(), DType::u16);
  std::vector<int> got(train.data<uint16_t>(), train.data<uint16_t>() + train.numel());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 0, 1, 2, 3, 4}));  // files in name order

  const Tensor all = read_token_shards(dir.file("d"));  // a folder: every *.bin, widened to i32
  ASSERT_EQ(all.dtype(), DType::i32);
  EXPECT_EQ(ints(all), (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 3, 4, 70000, 1}));
  expect_error([&] { read_token_shards(dir.file("d"), 50257); },
               {"x_val_000000.bin", "token 70000", "outside the vocabulary", "50257"});
  EXPECT_EQ(read_token_shards(dir.file("d"), 70001).numel(), 10);

  TokenBatcher batcher(all, 2, 3, 1);  // batches read i32 tokens too
  EXPECT_EQ(batcher.next().x.shape(), (Shape{2, 3}));

  std::ofstream(dir.file("d/train.list")) << "# shards\nx_train_000000.bin\nx_train_000009.bin\n";
  expect_error([&] { read_token_shards(dir.file("d/train.list")); },
               {"train.list", "line 3", "x_train_000009.bin", "not found"});
  std::ofstream(dir.file("d/train.list")) << "x_train_000001.bin\nx_train_000000.bin\n";
  EXPECT_EQ(read_token_shards(dir.file("d/train.list")).numel(), 8);
  expect_error([&] { read_token_shards(dir.file("d/y_*.bin")); }, {"y_*.bin", "no file matches"});
  expect_error([&] { read_token_shards(dir.file("d/none.bin")); }, {"none.bin", "not found"});
}

// ---------------------------------------------------------------------------------------- text

TEST(Text, BytesSplitIntoTrainAndValidation) {
  TempDir dir;
  std::vector<uint8_t> text(1000);
  for (size_t i = 0; i < text.size(); ++i) text[i] = uint8_t(255 - i % 256);  // high bytes too
  const std::string p = dir.file("corpus.txt");
  write_file_bytes(p, text);
  TextSplits s = load_byte_corpus(p, 0.1, 65);
  ASSERT_EQ(s.train.shape(), (Shape{900}));
  ASSERT_EQ(s.val.shape(), (Shape{100}));
  for (int i = 0; i < 900; ++i) ASSERT_EQ(s.train.data<uint16_t>()[i], text[size_t(i)]);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(s.val.data<uint16_t>()[i], text[size_t(900 + i)]);

  expect_error([&] { load_byte_corpus(dir.file("missing.txt"), 0.1, 1); },
               {"missing.txt", "not found"});
  expect_error([&] { read_byte_tokens(p, 1001); }, {p, "1000 bytes", "at least 1001"});
  expect_error([&] { load_byte_corpus(p, 0.05, 65); }, {p, "validation", "50 of 1000", "65"});
  expect_error([&] { load_byte_corpus(p, 1.0, 1); }, {p, "val_fraction"});
}

// ------------------------------------------------------------------------------------ batchers

TEST(TokenBatcher, DeterministicWindowsWithShiftedTargets) {
  const int64_t n = 5000, B = 8, T = 16;
  Tensor tok = arange_u16(n);  // token i == i, so a window's content gives its start
  TokenBatcher a(tok, B, T, 7), b(tok, B, T, 7), c(tok, B, T, 8);
  bool any_differs = false;
  for (int step = 0; step < 5; ++step) {
    TokenBatch ba = a.next(), bb = b.next(), bc = c.next();
    ASSERT_EQ(ba.x.shape(), (Shape{B, T}));
    ASSERT_EQ(ba.y.shape(), (Shape{B, T}));
    EXPECT_EQ(ints(ba.x), ints(bb.x));
    EXPECT_EQ(ints(ba.y), ints(bb.y));
    any_differs |= ints(ba.x) != ints(bc.x);
    const auto x = ints(ba.x), y = ints(ba.y);
    for (int64_t r = 0; r < B; ++r) {
      const int32_t start = x[size_t(r * T)];
      ASSERT_LE(start + T, n - 1);  // the last target is inside the array
      for (int64_t t = 0; t < T; ++t) {
        ASSERT_EQ(x[size_t(r * T + t)], start + t);
        ASSERT_EQ(y[size_t(r * T + t)], start + t + 1);
      }
    }
  }
  EXPECT_TRUE(any_differs);
}

TEST(TokenBatcher, OffsetsReachBothEnds) {
  const int64_t n = 100, T = 10;
  TokenBatcher b(arange_u16(n), 50, T, 3);
  std::set<int32_t> starts;
  for (int i = 0; i < 40; ++i) {
    const auto x = ints(b.next().x);
    for (size_t r = 0; r < 50; ++r) starts.insert(x[r * T]);
  }
  EXPECT_EQ(*starts.begin(), 0);
  EXPECT_EQ(*starts.rbegin(), n - T - 1);
  EXPECT_EQ(int64_t(starts.size()), n - T);
}

TEST(TokenBatcher, StateRestoresTheStream) {
  Tensor tok = arange_u16(3000);
  TokenBatcher a(tok, 4, 8, 11);
  a.next();
  TokenBatch second = a.next();
  TokenBatch third = a.next();
  EXPECT_EQ(second.next_state.seed, 11u);
  TokenBatcher restored(tok, 4, 8, 999);
  restored.set_state(second.next_state);
  EXPECT_EQ(ints(restored.next().x), ints(third.x));
  EXPECT_EQ(restored.state(), a.state());
}

TEST(TokenBatcher, RankRowsUnionIsTheSingleProcessBatch) {
  Tensor tok = arange_u16(4000);
  for (auto [B, N] : {std::pair<int64_t, int>{8, 4}, {7, 3}, {5, 5}}) {
    TokenBatcher single(tok, B, 12, 5);
    std::vector<TokenBatcher> ranks;
    for (int r = 0; r < N; ++r) ranks.emplace_back(tok, B, 12, 5, r, N);
    for (int step = 0; step < 3; ++step) {
      TokenBatch whole = single.next();
      std::vector<int32_t> x, y;
      std::vector<int64_t> ids;
      for (int r = 0; r < N; ++r) {
        TokenBatch part = ranks[size_t(r)].next();
        EXPECT_EQ(part.x.dim(0), (r + 1) * B / N - r * B / N);
        for (int32_t v : ints(part.x)) x.push_back(v);
        for (int32_t v : ints(part.y)) y.push_back(v);
        ids.insert(ids.end(), part.sample_ids.begin(), part.sample_ids.end());
      }
      EXPECT_EQ(x, ints(whole.x)) << "B=" << B << " N=" << N;
      EXPECT_EQ(y, ints(whole.y));
      // Sample ids (sample accounting): each row's window start, which arange's tokens show.
      EXPECT_EQ(ids, whole.sample_ids);
      ASSERT_EQ(whole.sample_ids.size(), size_t(B));
      for (int64_t r = 0; r < B; ++r)
        EXPECT_EQ(ints(whole.x)[size_t(r * 12)], int32_t(whole.sample_ids[size_t(r)]));
    }
  }
  expect_error([&] { TokenBatcher(tok, 2, 4, 0, 0, 3); }, {"global batch 2", "world size 3"});
  expect_error([&] { TokenBatcher(arange_u16(8), 2, 8, 0); }, {"8 tokens", "9"});
}

// Images whose every pixel encodes the sample index, labels = index % 10.
ImageDataset indexed_images(int64_t n) {
  ImageDataset d;
  d.num_classes = 10;
  d.images = Tensor::empty({n, 1, 2, 2});
  d.labels = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 4; ++k) d.images.data<float>()[i * 4 + k] = float(i);
    d.labels.data<int32_t>()[i] = int32_t(i % 10);
  }
  return d;
}

std::vector<int32_t> sample_ids(const ImageBatch& b) {
  std::vector<int32_t> ids;
  for (int64_t r = 0; r < b.images.dim(0); ++r) {
    const float* p = b.images.data<float>() + r * 4;
    EXPECT_EQ(p[0], p[3]);
    EXPECT_EQ(b.labels.data<int32_t>()[r], int32_t(p[0]) % 10);  // label travels with image
    EXPECT_EQ(b.sample_ids.at(size_t(r)), int64_t(p[0]));        // and the sample's id
    ids.push_back(int32_t(p[0]));
  }
  return ids;
}

TEST(ImageBatcher, ShuffledEpochsDeterministicAndSplitByRank) {
  const int64_t n = 23, B = 5;  // 4 batches per epoch, 3 samples dropped
  ImageBatcher a(indexed_images(n), B, 1), b(indexed_images(n), B, 1), c(indexed_images(n), B, 2);
  EXPECT_EQ(a.batches_per_epoch(), 4);
  std::vector<std::vector<int32_t>> epochs(3);
  bool seed_matters = false;
  for (int e = 0; e < 3; ++e) {
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(a.epoch(), e);
      ImageBatch ba = a.next();
      ASSERT_EQ(ba.images.shape(), (Shape{B, 1, 2, 2}));
      const auto ids = sample_ids(ba);
      EXPECT_EQ(ids, sample_ids(b.next()));
      seed_matters |= ids != sample_ids(c.next());
      epochs[size_t(e)].insert(epochs[size_t(e)].end(), ids.begin(), ids.end());
    }
    std::set<int32_t> distinct(epochs[size_t(e)].begin(), epochs[size_t(e)].end());
    EXPECT_EQ(distinct.size(), 20u) << "an epoch repeats a sample";
  }
  EXPECT_TRUE(seed_matters);
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);

  // Restoring mid-epoch continues the same stream.
  ImageBatcher d(indexed_images(n), B, 1);
  for (int i = 0; i < 5; ++i) d.next();
  ImageBatch sixth_ref = d.next();
  ImageBatcher e(indexed_images(n), B, 1);
  for (int i = 0; i < 4; ++i) e.next();
  ImageBatcher restored(indexed_images(n), B, 77);
  restored.set_state(e.next().next_state);
  EXPECT_EQ(sample_ids(restored.next()), sample_ids(sixth_ref));

  // Rank split: union of ranks equals the single batch.
  ImageBatcher single(indexed_images(n), B, 9);
  ImageBatcher r0(indexed_images(n), B, 9, 0, 2), r1(indexed_images(n), B, 9, 1, 2);
  for (int step = 0; step < 6; ++step) {
    auto whole = sample_ids(single.next());
    auto ids = sample_ids(r0.next());
    auto rest = sample_ids(r1.next());
    EXPECT_EQ(ids.size(), 2u);
    ids.insert(ids.end(), rest.begin(), rest.end());
    EXPECT_EQ(ids, whole);
  }
}

TEST(Evaluation, SequentialTokenBatchesCoverTheSplitInOrder) {
  const int64_t n = 1000, B = 4, T = 10;
  SequentialTokenBatches ev(arange_u16(n), B, T);
  EXPECT_EQ(ev.num_batches(), 24);  // (1000 - 1) / 10 = 99 windows -> 24 whole batches
  std::vector<int32_t> all_x, all_y;
  for (int64_t i = 0; i < ev.num_batches(); ++i) {
    TokenBatch b = ev.batch(i);
    for (int32_t v : ints(b.x)) all_x.push_back(v);
    for (int32_t v : ints(b.y)) all_y.push_back(v);
  }
  ASSERT_EQ(all_x.size(), size_t(24 * B * T));
  for (size_t i = 0; i < all_x.size(); ++i) {
    ASSERT_EQ(all_x[i], int32_t(i));
    ASSERT_EQ(all_y[i], int32_t(i + 1));
  }
  EXPECT_EQ(SequentialTokenBatches(arange_u16(n), B, T, 5).num_batches(), 5);

  SequentialTokenBatches r1(arange_u16(n), B, T, 0, 1, 2);
  EXPECT_EQ(ints(r1.batch(3).x)[0], (3 * B + 2) * T);
  expect_error([] { SequentialTokenBatches(arange_u16(40), 4, 10); }, {"40 tokens", "41"});
}

TEST(Evaluation, SequentialImageBatchesVisitEverySampleOnce) {
  SequentialImageBatches ev(indexed_images(23), 5);
  EXPECT_EQ(ev.num_batches(), 5);
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < ev.num_batches(); ++i) {
    auto part = sample_ids(ev.batch(i));
    ids.insert(ids.end(), part.begin(), part.end());
  }
  std::vector<int32_t> expected(23);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(ids, expected);
  SequentialImageBatches r1(indexed_images(23), 5, 1, 2);
  EXPECT_EQ(sample_ids(r1.batch(4)), (std::vector<int32_t>{21, 22}));  // last batch: 20..22
}

// ---------------------------------------------------------------------------------- prefetcher

TEST(Prefetcher, YieldsTheDirectSequence) {
  Tensor tok = arange_u16(3000);
  TokenBatcher direct(tok, 4, 8, 21);
  TokenBatcher background(tok, 4, 8, 21);
  Prefetcher<TokenBatch> pf([&] { return background.next(); }, 2);
  for (int i = 0; i < 10; ++i) {
    TokenBatch want = direct.next(), got = pf.next();
    ASSERT_EQ(ints(got.x), ints(want.x)) << "batch " << i;
    ASSERT_EQ(ints(got.y), ints(want.y));
    EXPECT_EQ(got.next_state, want.next_state);
  }
}

TEST(Prefetcher, PropagatesTheWorkersException) {
  int calls = 0;
  Prefetcher<int> pf(
      [&] {
        if (++calls == 4) throw Error("shard 'x.bin' vanished");
        return calls;
      },
      1);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(pf.next(), i);
  expect_error([&] { pf.next(); }, {"x.bin", "vanished"});
  expect_error([&] { pf.next(); }, {"vanished"});  // stays failed
}

TEST(Prefetcher, DeliversBatchesMadeBeforeTheException) {
  std::atomic<int> calls{0};
  Prefetcher<int> pf(
      [&] {
        if (++calls == 3) throw Error("boom");
        return calls.load();
      },
      2);
  EXPECT_EQ(pf.next(), 1);
  // Let the worker queue 2 and then fail, so the error is pending behind a queued batch.
  while (calls.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(pf.next(), 2);
  expect_error([&] { pf.next(); }, {"boom"});
}

TEST(Prefetcher, DestructorStopsAWorkerWithAFullQueue) {
  std::atomic<int> calls{0};
  {
    Prefetcher<int> pf([&] { return ++calls; }, 2);
    EXPECT_EQ(pf.next(), 1);
  }                            // must not hang while the worker waits for room
  EXPECT_LE(calls.load(), 3);  // 1 consumed + at most depth queued
}
