// Small file helpers shared by every reader and writer: positioned reads that fail with the
// file's name, and a writer that never leaves a half-written file at the destination (write
// "<path>.tmp", fsync, rename over the target, fsync the directory). All of it goes through
// the current file system (file_system.h), so tests can inject faults under it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/file_system.h"

namespace tessera {

class InputFile {
 public:
  explicit InputFile(std::string path);  // throws Error if it cannot be opened
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return file_->size(); }
  // Reads exactly n bytes at offset; throws Error naming the file and `what` otherwise.
  void read_at(uint64_t offset, void* dst, uint64_t n, const std::string& what) const {
    file_->read_at(offset, dst, n, what);
  }

 private:
  std::string path_;
  std::unique_ptr<ReadableFile> file_;
};

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);  // creates "<path>.tmp"
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, uint64_t n);
  // fsync, close, rename to the final path, fsync the directory.
  void commit();

 private:
  std::string path_, tmp_;
  std::unique_ptr<WritableFile> file_;
  bool committed_ = false;
};

// Writes a whole file through AtomicFileWriter.
void write_file_atomically(const std::string& path, std::string_view bytes);
// Reads a whole file of at most max_bytes (more is an Error naming the file and both sizes).
std::string read_small_file(const std::string& path, uint64_t max_bytes);
// zlib's CRC-32 of a whole file, read in blocks; *bytes gets its size.
uint32_t crc32_of_file(const std::string& path, uint64_t* bytes);
// Flushes a directory's entries (created, renamed or removed files) to disk (an Error if that
// fails; a file system that cannot fsync folders, EINVAL, counts as done).
void fsync_directory(const std::string& dir);
// rename(2), then fsync of the destination's parent directory: durable once it returns.
void durable_rename(const std::string& from, const std::string& to);

}  // namespace tessera
