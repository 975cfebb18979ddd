#include "core/file_io.h"

#include <zlib.h>

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace tessera {

InputFile::InputFile(std::string path)
    : path_(std::move(path)), file_(file_system().open_file(path_)) {}

InputFile::~InputFile() = default;

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp") {
  try {
    file_ = file_system().create_file(tmp_);
  } catch (const Error& e) {
    fail("cannot write '{}': {}", path_, e.what());
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  file_.reset();
  if (committed_) return;
  try {
    file_system().remove(tmp_);
  } catch (...) {  // a destructor must not throw; the next run's start-up cleans up
  }
}

void AtomicFileWriter::write(const void* data, uint64_t n) {
  TS_CHECK(file_ != nullptr, "'{}': write after commit", path_);
  file_->append(data, n);
}

void AtomicFileWriter::commit() {
  TS_CHECK(file_ != nullptr, "'{}': commit twice", path_);
  file_->sync();
  file_->close();
  file_.reset();
  file_system().rename(tmp_, path_);
  committed_ = true;
  fsync_directory(parent_directory(path_));
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  AtomicFileWriter out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

std::string read_small_file(const std::string& path, uint64_t max_bytes) {
  InputFile in(path);
  TS_CHECK(in.size() <= max_bytes, "'{}' has {} bytes, expected at most {}", path, in.size(),
           max_bytes);
  std::string s(size_t(in.size()), '\0');
  in.read_at(0, s.data(), in.size(), "the whole file");
  return s;
}

uint32_t crc32_of_file(const std::string& path, uint64_t* bytes) {
  InputFile in(path);
  std::vector<unsigned char> buf(size_t(std::clamp<uint64_t>(in.size(), 1, uint64_t(1) << 20)));
  uLong crc = crc32_z(0L, Z_NULL, 0);
  for (uint64_t off = 0; off < in.size();) {
    const uint64_t n = std::min<uint64_t>(buf.size(), in.size() - off);
    in.read_at(off, buf.data(), n, "a block for its checksum");
    crc = crc32_z(crc, buf.data(), size_t(n));
    off += n;
  }
  if (bytes) *bytes = in.size();
  return uint32_t(crc);
}

void fsync_directory(const std::string& dir) {
  file_system().sync_directory(dir);
}

void durable_rename(const std::string& from, const std::string& to) {
  file_system().rename(from, to);
  fsync_directory(parent_directory(to));
}

}  // namespace tessera
