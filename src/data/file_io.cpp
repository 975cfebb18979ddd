#include "data/file_io.h"

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/file_io.h"

namespace tessera::data {

namespace fs = std::filesystem;

namespace {

void check_regular_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  TS_CHECK(fs::exists(path, ec), "{} '{}': file not found", what, path);
  TS_CHECK(fs::is_regular_file(path, ec), "{} '{}': not a regular file", what, path);
}

// Closes a gzFile on scope exit.
struct GzCloser {
  gzFile f;
  ~GzCloser() {
    if (f) gzclose(f);
  }
};

}  // namespace

bool looks_gzipped(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& what) {
  check_regular_file(path, what);
  std::ifstream in(path, std::ios::binary);
  TS_CHECK(in.good(), "{} '{}': cannot open for reading", what, path);
  const auto size = fs::file_size(path);
  std::vector<uint8_t> bytes(size);
  in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size));
  TS_CHECK(in.gcount() == std::streamsize(size), "{} '{}': read {} of {} bytes", what, path,
           in.gcount(), size);
  return bytes;
}

std::vector<uint8_t> read_file_bytes_maybe_gzip(const std::string& path, const std::string& what,
                                                const SizeFromPrefix& max_size) {
  std::vector<uint8_t> raw = read_file_bytes(path, what);
  if (!looks_gzipped(raw)) return raw;

  // Inflate from memory; windowBits 15 + 16 accepts only a gzip wrapper (we saw its magic).
  z_stream zs{};
  TS_CHECK(inflateInit2(&zs, 15 + 16) == Z_OK, "{} '{}': zlib inflateInit2 failed", what, path);
  // Released on every way out, including an Error thrown by max_size (it may check a magic).
  struct InflateEnd {
    z_stream* zs;
    ~InflateEnd() { inflateEnd(zs); }
  } const end_inflate{&zs};
  std::vector<uint8_t> out;
  out.reserve(raw.size() * 4);
  zs.next_in = raw.data();
  // Fed in pieces so sizes beyond zlib's 32-bit avail_in also work.
  size_t in_pos = 0;
  int rc = Z_OK;
  uint8_t chunk[1 << 16];
  for (;;) {
    if (zs.avail_in == 0 && in_pos < raw.size()) {
      const size_t n = std::min<size_t>(raw.size() - in_pos, std::numeric_limits<uInt>::max());
      zs.next_in = raw.data() + in_pos;
      zs.avail_in = uInt(n);
      in_pos += n;
    }
    zs.next_out = chunk;
    zs.avail_out = sizeof(chunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.insert(out.end(), chunk, chunk + (sizeof(chunk) - zs.avail_out));
    if (max_size) {
      const size_t limit = max_size(out);
      if (out.size() > limit) {
        fail(
            "{} '{}': inflates to more than the {} bytes its header allows ({} compressed "
            "bytes); expected a file no longer than its header says",
            what, path, limit, raw.size());
      }
    }
    const bool input_left = zs.avail_in > 0 || in_pos < raw.size();
    if (rc == Z_STREAM_END) {
      if (!input_left) break;
      // Concatenated gzip members (what `cat a.gz b.gz` makes) decode as one file, as gunzip does.
      if (inflateReset(&zs) != Z_OK) break;
      rc = Z_OK;
      continue;
    }
    if (rc == Z_BUF_ERROR && !input_left) break;  // input ended inside the stream: truncated
    if (rc != Z_OK && rc != Z_BUF_ERROR) break;   // corrupt data
  }
  const std::string msg = zs.msg ? zs.msg : "";
  TS_CHECK(rc == Z_STREAM_END,
           "{} '{}': gzip stream is corrupt or truncated ({} compressed bytes in the file, "
           "zlib code {}{}{}); expected a complete gzip stream",
           what, path, raw.size(), rc, msg.empty() ? "" : ": ", msg);
  return out;
}

void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool gzip) {
  std::vector<uint8_t> packed;
  if (gzip) {  // deflate in memory with a gzip wrapper (window bits 15 + 16)
    z_stream z{};
    TS_CHECK(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
             "write '{}': deflateInit2 failed", path);
    packed.resize(deflateBound(&z, uLong(bytes.size())) + 32);
    z.next_in = const_cast<Bytef*>(bytes.data());
    z.avail_in = uInt(bytes.size());
    z.next_out = packed.data();
    z.avail_out = uInt(packed.size());
    const int rc = deflate(&z, Z_FINISH);
    packed.resize(z.total_out);
    deflateEnd(&z);
    TS_CHECK(rc == Z_STREAM_END, "write '{}': gzip compression failed ({})", path, rc);
  }
  const std::vector<uint8_t>& out = gzip ? packed : bytes;
  AtomicFileWriter w(path);  // <path>.tmp, fsync, rename: never a half-written file at path
  w.write(out.data(), out.size());
  w.commit();
}

}  // namespace tessera::data
