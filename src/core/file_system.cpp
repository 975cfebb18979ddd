#include "core/file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "core/error.h"

namespace tessera {

namespace {

std::string errno_text() {
  return std::strerror(errno);
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void append(const void* data, uint64_t n) override {
    TS_CHECK(fd_ >= 0, "writing '{}': the file is closed", path_);
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t put = ::write(fd_, p, n);
      if (put < 0 && errno == EINTR) continue;
      TS_CHECK(put > 0, "writing '{}' failed: {}", path_, errno_text());
      p += put, n -= uint64_t(put);
    }
  }
  void sync() override {
    TS_CHECK(fd_ >= 0 && ::fsync(fd_) == 0, "fsync of '{}' failed: {}", path_, errno_text());
  }
  void close() override {
    if (fd_ < 0) return;
    const int rc = ::close(fd_);
    fd_ = -1;
    TS_CHECK(rc == 0, "closing '{}' failed: {}", path_, errno_text());
  }
  void truncate(uint64_t size) override {
    TS_CHECK(fd_ >= 0, "truncating '{}': the file is closed", path_);
    int rc = 0;
    do {
      rc = ::ftruncate(fd_, off_t(size));
    } while (rc != 0 && errno == EINTR);
    TS_CHECK(rc == 0, "truncating '{}' to {} bytes failed: {}", path_, size, errno_text());
  }

 private:
  std::string path_;
  int fd_;
};

class PosixReadableFile final : public ReadableFile {
 public:
  explicit PosixReadableFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    TS_CHECK(fd_ >= 0, "cannot open '{}' for reading: {}", path_, errno_text());
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      fd_ = -1;
      fail("'{}' is not a regular file", path_);
    }
    size_ = uint64_t(st.st_size);
  }
  ~PosixReadableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  uint64_t size() const override { return size_; }
  void read_at(uint64_t offset, void* dst, uint64_t n, const std::string& what) const override {
    TS_CHECK(offset <= size_ && n <= size_ - offset,
             "'{}': {} needs bytes [{}, {}) but the file has {} bytes", path_, what, offset,
             offset + n, size_);
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      const ssize_t got = ::pread(fd_, p, n, off_t(offset));
      if (got < 0 && errno == EINTR) continue;
      TS_CHECK(got > 0, "'{}': reading {} at byte {} failed: {}", path_, what, offset,
               got < 0 ? errno_text() : "unexpected end of file");
      p += got, offset += uint64_t(got), n -= uint64_t(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

FileType type_of(mode_t mode) {
  if (S_ISREG(mode)) return FileType::file;
  if (S_ISDIR(mode)) return FileType::directory;
  return FileType::other;
}

class PosixFileSystem final : public FileSystem {
 public:
  std::unique_ptr<WritableFile> create_file(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    TS_CHECK(fd >= 0, "cannot create '{}': {}", path, errno_text());
    return std::make_unique<PosixWritableFile>(path, fd);
  }
  std::unique_ptr<WritableFile> append_file(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    TS_CHECK(fd >= 0, "cannot open '{}' for appending: {}", path, errno_text());
    return std::make_unique<PosixWritableFile>(path, fd);
  }
  std::unique_ptr<ReadableFile> open_file(const std::string& path) override {
    return std::make_unique<PosixReadableFile>(path);
  }
  void rename(const std::string& from, const std::string& to) override {
    TS_CHECK(::rename(from.c_str(), to.c_str()) == 0, "renaming '{}' to '{}' failed: {}", from, to,
             errno_text());
  }
  bool create_directory(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) == 0) return true;
    TS_CHECK(errno == EEXIST && type(path) == FileType::directory, "cannot create folder '{}': {}",
             path, errno_text());
    return false;
  }
  bool remove(const std::string& path) override {
    if (::unlink(path.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    if (errno == EISDIR || errno == EPERM) {
      if (::rmdir(path.c_str()) == 0) return true;
    }
    fail("cannot remove '{}': {}", path, errno_text());
  }
  std::vector<DirEntry> list_directory(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    TS_CHECK(d != nullptr, "cannot list folder '{}': {}", dir, errno_text());
    std::vector<DirEntry> out;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      out.push_back({name, type(dir + "/" + name)});
    }
    ::closedir(d);
    return out;
  }
  FileType type(const std::string& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return FileType::none;
    return type_of(st.st_mode);
  }
  void sync_directory(const std::string& dir) override {
    const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    TS_CHECK(fd >= 0, "cannot open folder '{}' to fsync it: {}", dir, errno_text());
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    // Some file systems refuse fsync on a folder (EINVAL): they have nothing to flush for it.
    TS_CHECK(rc == 0 || err == EINVAL || err == ENOTSUP, "fsync of folder '{}' failed: {}", dir,
             std::strerror(err));
  }
};

// The bytes a FillingFileSystem may still write, shared by its files (and their threads). Once
// full, the disk stays full for `full_for_s` seconds (forever when negative), then has room
// again: space that someone freed.
class FreeSpace {
 public:
  FreeSpace(uint64_t bytes, double full_for_s) : left_(bytes), full_for_s_(full_for_s) {}
  // Takes up to n bytes; returns how many it got.
  uint64_t take(uint64_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (left_ == 0 && full_for_s_ >= 0 &&
        std::chrono::duration<double>(now - full_since_).count() >= full_for_s_)
      left_ = UINT64_MAX;
    const uint64_t got = std::min(n, left_);
    left_ -= got;
    if (got > 0 && left_ == 0) full_since_ = now;  // it filled just now
    return got;
  }

 private:
  std::mutex mu_;
  uint64_t left_;
  double full_for_s_;
  std::chrono::steady_clock::time_point full_since_ = std::chrono::steady_clock::now();
};

class FillingWritableFile final : public WritableFile {
 public:
  FillingWritableFile(std::string path, std::unique_ptr<WritableFile> file, FreeSpace& space)
      : path_(std::move(path)), file_(std::move(file)), space_(space) {}
  void append(const void* data, uint64_t n) override {
    const uint64_t fits = space_.take(n);
    if (fits > 0) file_->append(data, fits);
    TS_CHECK(fits == n, "writing '{}' failed: {}", path_, std::strerror(ENOSPC));
  }
  void sync() override { file_->sync(); }
  void close() override { file_->close(); }
  void truncate(uint64_t size) override { file_->truncate(size); }

 private:
  std::string path_;
  std::unique_ptr<WritableFile> file_;
  FreeSpace& space_;
};

class FillingFileSystem final : public FileSystem {
 public:
  FillingFileSystem(uint64_t free_bytes, double full_for_s) : space_(free_bytes, full_for_s) {}
  std::unique_ptr<WritableFile> create_file(const std::string& path) override {
    return std::make_unique<FillingWritableFile>(path, posix().create_file(path), space_);
  }
  std::unique_ptr<WritableFile> append_file(const std::string& path) override {
    return std::make_unique<FillingWritableFile>(path, posix().append_file(path), space_);
  }
  std::unique_ptr<ReadableFile> open_file(const std::string& path) override {
    return posix().open_file(path);
  }
  void rename(const std::string& from, const std::string& to) override { posix().rename(from, to); }
  bool create_directory(const std::string& path) override { return posix().create_directory(path); }
  bool remove(const std::string& path) override { return posix().remove(path); }
  std::vector<DirEntry> list_directory(const std::string& dir) override {
    return posix().list_directory(dir);
  }
  FileType type(const std::string& path) override { return posix().type(path); }
  void sync_directory(const std::string& dir) override { posix().sync_directory(dir); }

 private:
  static FileSystem& posix() { return posix_file_system(); }
  FreeSpace space_;
};

std::atomic<FileSystem*> current{nullptr};

}  // namespace

FileSystem& posix_file_system() {
  static PosixFileSystem fs;
  return fs;
}

std::unique_ptr<FileSystem> filling_file_system(uint64_t free_bytes, double full_for_s) {
  return std::make_unique<FillingFileSystem>(free_bytes, full_for_s);
}

std::optional<FillingDiskSetting> parse_fault_fs_setting(std::string_view text) {
  if (text.empty()) return std::nullopt;
  auto is_number = [](std::string_view n) {
    return !n.empty() && n.size() <= 18 && n.find_first_not_of("0123456789") == n.npos;
  };
  std::vector<std::string_view> parts;
  for (size_t from = 0;;) {
    const size_t colon = text.find(':', from);
    parts.push_back(text.substr(from, colon == text.npos ? text.npos : colon - from));
    if (colon == text.npos) break;
    from = colon + 1;
  }
  bool ok = parts[0] == "enospc" && parts.size() <= 3;
  for (size_t i = 1; ok && i < parts.size(); ++i) ok = is_number(parts[i]);
  TS_CHECK(ok,
           "environment variable TESSERA_FAULT_FS = '{}': expected enospc[:BYTES[:SECONDS]] "
           "(checkpoint writes fail as on a full disk after BYTES more bytes, for SECONDS) or "
           "unset",
           text);
  // At most 18 digits: below 10^18, so every value fits in uint64_t (and a double holds the
  // seconds, if not exactly past 2^53, as the earlier std::stoull-then-double did).
  auto value = [](std::string_view n) {
    uint64_t v = 0;
    for (const char c : n) v = v * 10 + uint64_t(c - '0');
    return v;
  };
  FillingDiskSetting s;
  if (parts.size() > 1) s.free_bytes = value(parts[1]);
  if (parts.size() > 2) s.full_for_s = double(value(parts[2]));
  return s;
}

FileSystem& file_system() {
  FileSystem* fs = current.load();
  return fs ? *fs : posix_file_system();
}

ScopedFileSystem::ScopedFileSystem(FileSystem& fs) : previous_(current.exchange(&fs)) {}
ScopedFileSystem::~ScopedFileSystem() {
  current.store(previous_);
}

std::string parent_directory(const std::string& path) {
  const std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

std::string join_path(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

void create_directories_durably(const std::string& path) {
  FileSystem& fs = file_system();
  if (path.empty() || fs.type(path) == FileType::directory) return;
  const std::string parent = parent_directory(path);
  if (parent != path) create_directories_durably(parent);
  if (fs.create_directory(path)) fs.sync_directory(parent);
}

bool remove_all(const std::string& path) {
  FileSystem& fs = file_system();
  const FileType t = fs.type(path);
  if (t == FileType::none) return false;
  if (t == FileType::directory)
    for (const DirEntry& e : fs.list_directory(path)) remove_all(join_path(path, e.name));
  fs.remove(path);
  return true;
}

void remove_all_quietly(const std::string& path) noexcept {
  try {
    remove_all(path);
  } catch (...) {
  }
}

uint64_t file_size(const std::string& path) {
  return file_system().open_file(path)->size();
}

}  // namespace tessera
