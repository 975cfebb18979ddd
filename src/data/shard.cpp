#include "data/shard.h"

#include <glob.h>

#include <algorithm>
#include <bit>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "data/file_io.h"

namespace tessera::data {

namespace fs = std::filesystem;

namespace {

int32_t read_le32(const uint8_t* p) {
  return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                 uint32_t(p[3]) << 24);
}
void put_le32(uint8_t* p, int32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(uint32_t(v) >> (8 * i));
}

// Bytes per token that a header's (magic, version) promise; Error for any other pair.
int token_bytes_of(const std::string& path, int32_t magic, int32_t version) {
  TS_CHECK(magic == kShardMagic || magic == kShardMagicU32,
           "token shard '{}': bad magic (header[0]) {}, expected {} (uint16 tokens) or {} "
           "(uint32 tokens)",
           path, magic, kShardMagic, kShardMagicU32);
  const bool wide = magic == kShardMagicU32;
  const int32_t expected = wide ? kShardVersionU32 : kShardVersion;
  TS_CHECK(version == expected,
           "token shard '{}': unsupported version (header[1]) {}, expected {} ({} tokens, magic "
           "{})",
           path, version, expected, wide ? "uint32" : "uint16", magic);
  return wide ? 4 : 2;
}

// Little-endian token bytes -> host order, in place.
void to_host_order(void* tokens, int64_t count, int width) {
  if constexpr (std::endian::native == std::endian::big) {
    auto* b = static_cast<uint8_t*>(tokens);
    for (int64_t i = 0; i < count; ++i) std::reverse(b + i * width, b + (i + 1) * width);
  }
}

std::vector<std::string> glob_files(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> files(g.gl_pathv, g.gl_pathv + (rc == 0 ? g.gl_pathc : 0));
  ::globfree(&g);
  TS_CHECK(!files.empty(), "token shards '{}': no file matches the pattern", pattern);
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> folder_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".bin") files.push_back(e.path().string());
  TS_CHECK(!files.empty(), "token shards '{}': the folder has no *.bin shard files", dir);
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> listed_files(const std::string& list) {
  const std::vector<uint8_t> bytes = read_file_bytes(list, "shard list");
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  std::vector<std::string> files;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty() || line[0] == '#') continue;
    const fs::path p = fs::path(list).parent_path() / line;
    TS_CHECK(fs::is_regular_file(p), "shard list '{}' line {}: shard file '{}' not found", list, n,
             p.string());
    files.push_back(p.string());
  }
  TS_CHECK(!files.empty(), "shard list '{}': names no shard file", list);
  return files;
}

}  // namespace

Tensor read_token_shard(const std::string& path) {
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
  const int width = token_bytes_of(path, magic, version);
  TS_CHECK(count >= 0, "token shard '{}': token count (header[2]) {} is negative", path, count);
  const uint64_t payload = uint64_t(width) * uint64_t(count);
  const uint64_t expected = uint64_t(kShardHeaderBytes) + payload;
  TS_CHECK(size == expected,
           "token shard '{}': token count (header[2]) {} needs a file of {} bytes, found {} ({})",
           path, count, expected, size,
           size < expected ? "file truncated or count too large" : "unexpected trailing bytes");

  Tensor tokens = Tensor::empty({int64_t(count)}, width == 2 ? DType::u16 : DType::i32);
  void* t = count > 0 ? tokens.raw_data() : nullptr;
  in.read(static_cast<char*>(t), std::streamsize(payload));
  TS_CHECK(in.gcount() == std::streamsize(payload), "token shard '{}': tokens: read {} of {} bytes",
           path, in.gcount(), payload);
  to_host_order(t, count, width);
  if (width == 4) {
    const int32_t* ids = tokens.data<int32_t>();
    const int32_t* bad = std::find_if(ids, ids + count, [](int32_t v) { return v < 0; });
    TS_CHECK(bad == ids + count,
             "token shard '{}': token {} at position {} is 2^31 or more, expected ids below 2^31",
             path, uint32_t(*bad), bad - ids);
  }
  return tokens;
}

void write_token_shard(const std::string& path, const Tensor& tokens) {
  TS_CHECK((tokens.dtype() == DType::u16 || tokens.dtype() == DType::i32) && tokens.ndim() == 1,
           "write_token_shard '{}': expected u16 or i32 [n] tokens, got {}", path, tokens.desc());
  const int64_t n = tokens.dim(0);
  TS_CHECK(n <= std::numeric_limits<int32_t>::max(),
           "write_token_shard '{}': {} tokens do not fit the int32 count field", path, n);
  const bool wide = tokens.dtype() == DType::i32;
  const int width = wide ? 4 : 2;
  const Tensor src = tokens.contiguous();
  const int32_t* wide_ids = wide && n > 0 ? src.data<int32_t>() : nullptr;
  const uint16_t* narrow_ids = !wide && n > 0 ? src.data<uint16_t>() : nullptr;
  if (wide_ids)
    TS_CHECK(*std::min_element(wide_ids, wide_ids + n) >= 0,
             "write_token_shard '{}': negative token id, expected ids >= 0", path);
  std::vector<uint8_t> bytes(size_t(kShardHeaderBytes + width * n), 0);
  put_le32(bytes.data(), wide ? kShardMagicU32 : kShardMagic);
  put_le32(bytes.data() + 4, wide ? kShardVersionU32 : kShardVersion);
  put_le32(bytes.data() + 8, int32_t(n));
  uint8_t* out = bytes.data() + kShardHeaderBytes;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = wide ? uint32_t(wide_ids[i]) : narrow_ids[i];
    for (int k = 0; k < width; ++k) out[width * i + k] = uint8_t(v >> (8 * k));
  }
  write_file_bytes(path, bytes);
}

std::vector<std::string> shard_files(const std::string& where) {
  std::error_code ec;
  if (where.find_first_of("*?[") != std::string::npos) return glob_files(where);
  if (fs::is_directory(where, ec)) return folder_files(where);
  if (fs::path(where).extension() == ".list") return listed_files(where);
  TS_CHECK(fs::is_regular_file(where, ec), "token shard '{}': file not found", where);
  return {where};
}

int64_t max_token_id(const Tensor& tokens) {
  TS_CHECK(tokens.dtype() == DType::u16 || tokens.dtype() == DType::i32,
           "max_token_id: expected u16 or i32 tokens, got {}", tokens.desc());
  const int64_t n = tokens.numel();
  if (n == 0) return -1;
  if (tokens.dtype() == DType::u16) {
    const uint16_t* p = tokens.data<uint16_t>();
    return *std::max_element(p, p + n);
  }
  const int32_t* p = tokens.data<int32_t>();
  return *std::max_element(p, p + n);
}

Tensor read_token_shards(const std::string& where, int64_t vocab_size) {
  std::vector<Tensor> parts;
  bool wide = false;
  int64_t total = 0;
  for (const std::string& file : shard_files(where)) {
    Tensor t = read_token_shard(file);
    const int64_t top = max_token_id(t);
    TS_CHECK(vocab_size <= 0 || top < vocab_size,
             "token shard '{}': token {} is outside the vocabulary: expected < model.vocab_size = "
             "{}",
             file, top, vocab_size);
    wide = wide || t.dtype() == DType::i32;
    total += t.numel();
    parts.push_back(std::move(t));
  }
  if (parts.size() == 1) return parts[0];
  Tensor all = Tensor::empty({total}, wide ? DType::i32 : DType::u16);
  int64_t at = 0;
  for (const Tensor& t : parts) {
    const int64_t n = t.numel();
    if (!wide) {
      std::copy_n(t.data<uint16_t>(), n, all.data<uint16_t>() + at);
    } else if (t.dtype() == DType::i32) {
      std::copy_n(t.data<int32_t>(), n, all.data<int32_t>() + at);
    } else {
      std::copy_n(t.data<uint16_t>(), n, all.data<int32_t>() + at);
    }
    at += n;
  }
  return all;
}

}  // namespace tessera::data
