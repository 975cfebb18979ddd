#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

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
  // Make the rename itself durable. Best effort: some filesystems refuse fsync on directories.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace tessera
