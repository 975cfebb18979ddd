// The one file-system layer that checkpoint and run-folder I/O goes through (docs/CHECKPOINTS.md,
// "The file-system layer"): checkpoints, the run folder itself, config.toml, the final weights,
// metrics.jsonl's appends. The POSIX implementation is the default; a test swaps in another (a
// fault-injecting one: tests/fault_file_system.h) with ScopedFileSystem, so the real save, load
// and logging code runs against simulated kills, power cuts and full disks. file_io.h's
// InputFile, AtomicFileWriter and friends are built on it; code above core uses those or the
// helpers here, never std::filesystem or open(2) directly, for anything a checkpoint or a run
// folder reads or writes.
//
// Every failure is a tessera::Error naming the path and the reason (strerror's text).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// A file open for writing: from its start (create_file: created or truncated) or at its end
// (append_file). Each append() is handed to the kernel before it returns (no buffering here),
// so a killed process keeps it; data is durable only after sync(). The destructor closes
// without syncing and never throws.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual void append(const void* data, uint64_t n) = 0;
  virtual void sync() = 0;   // fsync(2)
  virtual void close() = 0;  // close(2): a failure (a deferred write error) throws
  // ftruncate(2): cuts the file to `size` bytes (the next append lands there). For a writer
  // that must take back what a failed append left behind (a partial line on a full disk).
  virtual void truncate(uint64_t size) = 0;
};

class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly n bytes at offset; throws an Error naming the file and `what` otherwise.
  virtual void read_at(uint64_t offset, void* dst, uint64_t n, const std::string& what) const = 0;
};

enum class FileType { none, file, directory, other };

struct DirEntry {
  std::string name;  // a plain name, no '/'
  FileType type = FileType::none;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  virtual std::unique_ptr<WritableFile> create_file(const std::string& path) = 0;
  // Opens a file for appending (O_APPEND), creating it when there is none; its contents stay.
  virtual std::unique_ptr<WritableFile> append_file(const std::string& path) = 0;
  virtual std::unique_ptr<ReadableFile> open_file(const std::string& path) = 0;  // regular only
  // rename(2): atomic; replaces a file or an empty directory at `to`.
  virtual void rename(const std::string& from, const std::string& to) = 0;
  // mkdir(2) of one level; false when it already exists as a directory.
  virtual bool create_directory(const std::string& path) = 0;
  // unlink(2) or rmdir(2) (an empty directory); false when there was nothing to remove.
  virtual bool remove(const std::string& path) = 0;
  // The entries of a directory (not "." or ".."), in no particular order.
  virtual std::vector<DirEntry> list_directory(const std::string& dir) = 0;
  // What is at path (FileType::none when nothing is; stat(2) follows links).
  virtual FileType type(const std::string& path) = 0;
  // fsync(2) of a directory: its entries (created, renamed, removed) become durable.
  virtual void sync_directory(const std::string& dir) = 0;
};

FileSystem& posix_file_system();
// The POSIX file system on a disk that fills up: after `free_bytes` more bytes have been
// written, every write fails with ENOSPC (the one that crosses the limit writes what fits);
// `full_for_s` seconds after it filled (never, when negative) it has room again. For
// fault-injection runs of the real binary: TESSERA_FAULT_FS=enospc[:BYTES[:SECONDS]] makes
// `tessera train` use it (tests/mpi/soak_tests.sh); tests swap in richer faults themselves.
std::unique_ptr<FileSystem> filling_file_system(uint64_t free_bytes, double full_for_s = -1);

// TESSERA_FAULT_FS's value, read: `enospc[:BYTES[:SECONDS]]`, BYTES (0 when omitted) and
// SECONDS (never, when omitted) as filling_file_system takes them; each a decimal of at most
// 18 digits. An empty value means no fault (nullopt); anything else is an Error quoting it.
struct FillingDiskSetting {
  uint64_t free_bytes = 0;
  double full_for_s = -1;  // negative: full for good
  bool operator==(const FillingDiskSetting&) const = default;
};
std::optional<FillingDiskSetting> parse_fault_fs_setting(std::string_view text);
// The file system every checkpoint path uses: posix_file_system() unless a ScopedFileSystem
// is alive. Process-wide (background writer threads see it too).
FileSystem& file_system();

// Makes `fs` the current file system until destroyed (tests). Not nestable across threads.
class ScopedFileSystem {
 public:
  explicit ScopedFileSystem(FileSystem& fs);
  ~ScopedFileSystem();
  ScopedFileSystem(const ScopedFileSystem&) = delete;
  ScopedFileSystem& operator=(const ScopedFileSystem&) = delete;

 private:
  FileSystem* previous_;
};

// ---- Helpers over file_system() ----

// The parent folder of a path ("." for a bare name).
std::string parent_directory(const std::string& path);
// `dir` / `name`.
std::string join_path(const std::string& dir, const std::string& name);
// mkdir -p, durably: after each folder it creates, its parent is fsynced (a folder that a power
// cut can take back would take every checkpoint inside it along).
void create_directories_durably(const std::string& path);
// rm -r; false when there was nothing. Throws on the first failure.
bool remove_all(const std::string& path);
// remove_all that reports nothing (cleanup that must not mask an earlier error).
void remove_all_quietly(const std::string& path) noexcept;
uint64_t file_size(const std::string& path);  // throws when it is not a regular file

}  // namespace tessera
