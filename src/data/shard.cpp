#include "data/shard.h"

#include <bit>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "core/error.h"
#include "data/file_io.h"

namespace tessera::data {

namespace {

int32_t read_le32(const uint8_t* p) {
  return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                 uint32_t(p[3]) << 24);
}
void put_le32(uint8_t* p, int32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(uint32_t(v) >> (8 * i));
}

}  // namespace

Tensor read_token_shard(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TS_CHECK(fs::is_regular_file(path, ec), "token shard '{}': file not found", path);
  const uint64_t size = fs::file_size(path);
  TS_CHECK(size >= uint64_t(kShardHeaderBytes),
           "token shard '{}': header: file has {} bytes, expected at least the {}-byte header",
           path, size, kShardHeaderBytes);
  std::ifstream in(path, std::ios::binary);
  TS_CHECK(in.good(), "token shard '{}': cannot open for reading", path);
  uint8_t header[kShardHeaderBytes];
  in.read(reinterpret_cast<char*>(header), kShardHeaderBytes);
  TS_CHECK(in.gcount() == kShardHeaderBytes, "token shard '{}': header: read {} of {} bytes", path,
           in.gcount(), kShardHeaderBytes);

  const int32_t magic = read_le32(header), version = read_le32(header + 4);
  const int32_t count = read_le32(header + 8);
  TS_CHECK(magic == kShardMagic, "token shard '{}': bad magic (header[0]) {}, expected {}", path,
           magic, kShardMagic);
  TS_CHECK(version == kShardVersion,
           "token shard '{}': unsupported version (header[1]) {}, expected {} (uint16 tokens)",
           path, version, kShardVersion);
  TS_CHECK(count >= 0, "token shard '{}': token count (header[2]) {} is negative", path, count);
  const uint64_t expected = uint64_t(kShardHeaderBytes) + 2 * uint64_t(count);
  TS_CHECK(size == expected,
           "token shard '{}': token count (header[2]) {} needs a file of {} bytes, found {} ({})",
           path, count, expected, size,
           size < expected ? "file truncated or count too large" : "unexpected trailing bytes");

  Tensor tokens = Tensor::empty({int64_t(count)}, DType::u16);
  uint16_t* t = count > 0 ? tokens.data<uint16_t>() : nullptr;
  in.read(reinterpret_cast<char*>(t), std::streamsize(2 * uint64_t(count)));
  TS_CHECK(in.gcount() == std::streamsize(2 * uint64_t(count)),
           "token shard '{}': tokens: read {} of {} bytes", path, in.gcount(), 2 * uint64_t(count));
  if constexpr (std::endian::native == std::endian::big) {
    for (int32_t i = 0; i < count; ++i) t[i] = uint16_t(t[i] >> 8 | t[i] << 8);
  }
  return tokens;
}

void write_token_shard(const std::string& path, const Tensor& tokens) {
  TS_CHECK(tokens.dtype() == DType::u16 && tokens.ndim() == 1,
           "write_token_shard '{}': expected u16 [n] tokens, got {}", path, tokens.desc());
  const int64_t n = tokens.dim(0);
  TS_CHECK(n <= std::numeric_limits<int32_t>::max(),
           "write_token_shard '{}': {} tokens do not fit the int32 count field", path, n);
  std::vector<uint8_t> bytes(size_t(kShardHeaderBytes + 2 * n), 0);
  put_le32(bytes.data(), kShardMagic);
  put_le32(bytes.data() + 4, kShardVersion);
  put_le32(bytes.data() + 8, int32_t(n));
  if (n > 0) {
    const Tensor src = tokens.contiguous();
    const uint16_t* t = src.data<uint16_t>();
    uint8_t* out = bytes.data() + kShardHeaderBytes;
    for (int64_t i = 0; i < n; ++i) {
      out[2 * i] = uint8_t(t[i]);
      out[2 * i + 1] = uint8_t(t[i] >> 8);
    }
  }
  write_file_bytes(path, bytes);
}

}  // namespace tessera::data
