#include "data/idx.h"

#include <array>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "data/file_io.h"

namespace tessera::data {

namespace {

uint32_t read_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
}

std::string magic_meaning(uint32_t magic) {
  switch (magic) {
    case kIdxImagesMagic:
      return "u8 images [n, rows, cols]";
    case kIdxLabelsMagic:
      return "u8 labels [n]";
    default:
      return fmt::format("type 0x{:02x} with {} dims", (magic >> 8) & 0xff, magic & 0xff);
  }
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

void check_magic(const std::string& path, uint32_t magic, uint32_t expected_magic) {
  TS_CHECK(magic == expected_magic,
           "IDX file '{}': bad magic 0x{:08x} ({}), expected 0x{:08x} ({})", path, magic,
           magic_meaning(magic), expected_magic, magic_meaning(expected_magic));
}

}  // namespace

IdxArray read_idx(const std::string& path, uint32_t expected_magic) {
  // A gzip file may not inflate past what its header promises: header + product of the dims.
  const size_t header_bytes = 4 + 4 * size_t(expected_magic & 0xff);
  const auto idx_size = [&](const std::vector<uint8_t>& prefix) -> size_t {
    if (prefix.size() < header_bytes) return SIZE_MAX;
    check_magic(path, read_be32(prefix.data()), expected_magic);  // else the dims mean nothing
    size_t n = 1;
    for (size_t i = 4; i < header_bytes; i += 4) {
      const size_t d = read_be32(prefix.data() + i);
      if (d != 0 && n > (SIZE_MAX - header_bytes) / d) return SIZE_MAX;  // the reader refuses
      n *= d;
    }
    return header_bytes + n;
  };
  const std::vector<uint8_t> bytes = read_file_bytes_maybe_gzip(path, "IDX file", idx_size);
  TS_CHECK(bytes.size() >= 4, "IDX file '{}': magic: file has {} bytes, expected at least 4", path,
           bytes.size());
  IdxArray out;
  out.magic = read_be32(bytes.data());
  check_magic(path, out.magic, expected_magic);

  const size_t ndims = expected_magic & 0xff;
  const size_t header = 4 + 4 * ndims;
  TS_CHECK(bytes.size() >= header,
           "IDX file '{}': header truncated: {} dims need a {}-byte header, file has {} bytes",
           path, ndims, header, bytes.size());
  // The payload size in 64 bits; three u32 dims could overflow it, but only past any real file,
  // so stop multiplying once it exceeds what the file holds.
  const uint64_t found = bytes.size() - header;
  uint64_t expected = 1;
  bool exceeds = false;
  for (size_t i = 0; i < ndims; ++i) {
    const uint32_t d = read_be32(bytes.data() + 4 + 4 * i);
    TS_CHECK(d > 0, "IDX file '{}': dim {} is 0; expected every dim > 0", path, i);
    out.dims.push_back(d);
    if (expected > std::numeric_limits<uint64_t>::max() / d) exceeds = true;
    if (!exceeds) expected *= d;
  }
  TS_CHECK(!exceeds && expected == found,
           "IDX file '{}': payload has {} bytes but header dims {} need {} bytes ({})", path, found,
           dims_str(out.dims), exceeds ? std::string("more than 2^64") : std::to_string(expected),
           !exceeds && found > expected
               ? fmt::format("{} unexpected trailing bytes", found - expected)
               : std::string("file truncated"));
  out.data.assign(bytes.begin() + std::ptrdiff_t(header), bytes.end());
  return out;
}

void write_idx(const std::string& path, uint32_t magic, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& data, bool gzip) {
  TS_CHECK(((magic >> 8) & 0xff) == 0x08 && (magic >> 16) == 0,
           "write_idx '{}': magic 0x{:08x} is not a u8 IDX magic (0x000008NN)", path, magic);
  TS_CHECK(dims.size() == (magic & 0xff), "write_idx '{}': magic 0x{:08x} says {} dims, got {}",
           path, magic, magic & 0xff, dims_str(dims));
  uint64_t n = 1;
  for (int64_t d : dims) {
    TS_CHECK(d > 0 && d <= std::numeric_limits<uint32_t>::max(),
             "write_idx '{}': dims {} must each be in [1, 2^32)", path, dims_str(dims));
    n *= uint64_t(d);
  }
  TS_CHECK(n == data.size(), "write_idx '{}': dims {} need {} bytes, got {}", path, dims_str(dims),
           n, data.size());
  std::vector<uint8_t> bytes;
  bytes.reserve(4 + 4 * dims.size() + data.size());
  append_be32(bytes, magic);
  for (int64_t d : dims) append_be32(bytes, uint32_t(d));
  bytes.insert(bytes.end(), data.begin(), data.end());
  write_file_bytes(path, bytes, gzip);
}

ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int num_classes, float mean, float std) {
  TS_CHECK(num_classes > 0 && std > 0.f,
           "load_idx_dataset: expected num_classes > 0 and std > 0, got {} and {}", num_classes,
           std);
  const IdxArray images = read_idx(images_path, kIdxImagesMagic);
  const IdxArray labels = read_idx(labels_path, kIdxLabelsMagic);
  const int64_t n = images.dims[0], rows = images.dims[1], cols = images.dims[2];
  TS_CHECK(labels.dims[0] == n,
           "IDX labels '{}': label count {} does not match image count {} in '{}'", labels_path,
           labels.dims[0], n, images_path);

  ImageDataset ds;
  ds.num_classes = num_classes;
  ds.labels = Tensor::empty({n}, DType::i32);
  int32_t* lab = ds.labels.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    TS_CHECK(labels.data[i] < num_classes,
             "IDX labels '{}': label {} at index {} is out of range; expected < {}", labels_path,
             int(labels.data[i]), i, num_classes);
    lab[i] = labels.data[i];
  }

  // 256 possible inputs: normalise through a table.
  std::array<float, 256> table;
  for (int v = 0; v < 256; ++v) table[v] = (float(v) / 255.f - mean) / std;
  ds.images = Tensor::empty({n, 1, rows, cols}, DType::f32);
  float* img = ds.images.data<float>();
  const int64_t total = n * rows * cols;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < total; ++i) img[i] = table[images.data[i]];
  return ds;
}

ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split) {
  TS_CHECK(split == "train" || split == "test",
           "load_fashion_mnist: split '{}' is not 'train' or 'test'", split);
  const std::string prefix = split == "train" ? "train" : "t10k";
  // Accept both the compressed files as distributed and already-unpacked ones.
  auto find = [&](const std::string& stem) {
    const std::filesystem::path base = std::filesystem::path(dir) / stem;
    for (const std::string& suffix : {std::string(".gz"), std::string()}) {
      std::string p = base.string() + suffix;
      if (std::filesystem::exists(p)) return p;
    }
    fail("load_fashion_mnist: '{}' not found (nor with .gz) in '{}'", stem, dir);
  };
  const std::string images = find(prefix + "-images-idx3-ubyte");
  const std::string labels = find(prefix + "-labels-idx1-ubyte");
  ImageDataset ds =
      load_idx_dataset(images, labels, kFashionMnistClasses, kFashionMnistMean, kFashionMnistStd);
  TS_CHECK(ds.images.dim(2) == 28 && ds.images.dim(3) == 28,
           "load_fashion_mnist: images in '{}' are {}x{}, expected 28x28", images, ds.images.dim(2),
           ds.images.dim(3));
  return ds;
}

}  // namespace tessera::data
