#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"

namespace tessera {

InputFile::InputFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  TS_CHECK(fd_ >= 0, "cannot open '{}' for reading: {}", path_, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail("'{}' is not a regular file", path_);
  }
  size_ = uint64_t(st.st_size);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void InputFile::read_at(uint64_t offset, void* dst, uint64_t n, const std::string& what) const {
  TS_CHECK(offset <= size_ && n <= size_ - offset,
           "'{}': {} needs bytes [{}, {}) but the file has {} bytes", path_, what, offset,
           offset + n, size_);
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t got = ::pread(fd_, p, n, off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    TS_CHECK(got > 0, "'{}': reading {} at byte {} failed: {}", path_, what, offset,
             got < 0 ? std::strerror(errno) : "unexpected end of file");
    p += got, offset += uint64_t(got), n -= uint64_t(got);
  }
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TS_CHECK(fd_ >= 0, "cannot create '{}' (to write '{}'): {}", tmp_, path_, std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, uint64_t n) {
  TS_CHECK(fd_ >= 0, "'{}': write after commit", path_);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t put = ::write(fd_, p, n);
    if (put < 0 && errno == EINTR) continue;
    TS_CHECK(put > 0, "writing '{}' failed: {}", tmp_, std::strerror(errno));
    p += put, n -= uint64_t(put);
  }
}

void AtomicFileWriter::commit() {
  TS_CHECK(fd_ >= 0, "'{}': commit twice", path_);
  TS_CHECK(::fsync(fd_) == 0, "fsync of '{}' failed: {}", tmp_, std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  TS_CHECK(rc == 0, "closing '{}' failed: {}", tmp_, std::strerror(errno));
  TS_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "renaming '{}' to '{}' failed: {}", tmp_,
           path_, std::strerror(errno));
  committed_ = true;
  fsync_directory(std::filesystem::path(path_).parent_path().string());
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
  std::vector<unsigned char> buf(size_t(1) << 20);
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
  // Best effort: some filesystems refuse fsync on directories (EINVAL); that is not an error.
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void durable_rename(const std::string& from, const std::string& to) {
  TS_CHECK(::rename(from.c_str(), to.c_str()) == 0, "renaming '{}' to '{}' failed: {}", from, to,
           std::strerror(errno));
  fsync_directory(std::filesystem::path(to).parent_path().string());
}

}  // namespace tessera
