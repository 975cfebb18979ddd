// Shared pieces of the libFuzzer targets (docs/FUZZING.md).
//
// The parsers under test take a path, so each target writes its input into an anonymous
// in-memory file (memfd) and passes "/proc/self/fd/<n>": no disk traffic, nothing to clean up,
// and no name shared with another fuzzing process.
//
// The contract every target checks: a parser either succeeds or throws tessera::Error. Any other
// exception, a sanitizer report, a crash or an internal-error Error (TS_ASSERT: a Tessera bug,
// not bad input) aborts, which libFuzzer records as a crash.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/error.h"

namespace tessera::fuzz {

// An in-memory file whose contents are replaced on every write().
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  const std::string& path() const { return path_; }

  void write(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) die("ftruncate");
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, off_t(done));
      if (n <= 0) die("pwrite");
      done += size_t(n);
    }
  }

 private:
  [[noreturn]] static void die(const char* what) {
    std::perror(what);
    std::abort();
  }
  int fd_;
  std::string path_;
};

// A per-process file for round trips through the writers (they need a real directory for their
// "<path>.tmp"), in /dev/shm where there is one since the writers fsync; removed when the
// process exits.
class TempPath {
 public:
  explicit TempPath(const std::string& stem) {
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::is_directory("/dev/shm", ec)
                                          ? std::filesystem::path("/dev/shm")
                                          : std::filesystem::temp_directory_path();
    path_ = (dir / ("tessera_fuzz_" + stem + "_" + std::to_string(::getpid()))).string();
  }
  ~TempPath() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A property the target checks on parsed data (a round trip, an invariant) does not hold.
[[noreturn]] inline void property_failed(std::string_view what) {
  std::fprintf(stderr, "fuzz property failed: %.*s\n", int(what.size()), what.data());
  std::abort();
}

// Runs `parse`; returns normally when it succeeds or throws a tessera::Error about the input.
template <class F>
void expect_success_or_error(F&& parse) {
  try {
    parse();
  } catch (const tessera::Error& e) {
    const std::string_view msg = e.what();
    // TS_ASSERT's message: an invariant of Tessera itself broke on this input.
    if (msg.starts_with("internal error")) property_failed(msg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: exception that is not a tessera::Error: %s\n", e.what());
    std::abort();
  }
}

// The contract of an environment variable's parser (TESSERA_FAULT_FS, TESSERA_FAULT_STALL):
// `parse(value)` returns nullopt exactly for an empty value, accepts a value exactly when
// `well_formed(value)` (the target's independent check of the grammar) says so, and refuses any
// other with a tessera::Error quoting "environment variable NAME = 'VALUE': expected FORM".
// Returns what parsed (nullopt when refused or empty) for the target's own checks.
template <class Parse, class WellFormed>
auto check_env_setting(std::string_view value, Parse&& parse, WellFormed&& well_formed,
                       std::string_view name, std::string_view form) -> decltype(parse(value)) {
  decltype(parse(value)) s;
  try {
    s = parse(value);
  } catch (const tessera::Error& e) {
    // what() is a C string: a NUL in the value (which no environment variable can hold) ends
    // the message there.
    const std::string_view msg = e.what();
    const std::string quoted = "environment variable " + std::string(name) + " = '" +
                               std::string(value) + "': expected " + std::string(form);
    if (value.find('\0') == std::string_view::npos && msg.find(quoted) == std::string_view::npos)
      property_failed(std::string("the error does not quote the value: ") + e.what());
    if (well_formed(value)) property_failed("a well-formed value was refused");
    return s;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: exception that is not a tessera::Error: %s\n", e.what());
    std::abort();
  }
  if (!s) {
    if (!value.empty()) property_failed("a non-empty value means no fault");
    return s;
  }
  if (!well_formed(value)) property_failed("a malformed value was accepted");
  return s;
}

}  // namespace tessera::fuzz
