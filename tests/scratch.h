// A test's own folder under the system temp directory.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace tessera::testing {

// The folders scratch_dir made, removed when the process that made them exits (not when a
// forked child that inherited the list exits first).
class ScratchDirs {
 public:
  ~ScratchDirs() {
    if (::getpid() != owner_) return;
    std::error_code ec;
    for (const std::filesystem::path& d : dirs_) std::filesystem::remove_all(d, ec);
  }
  void add(const std::filesystem::path& d) { dirs_.push_back(d); }

 private:
  pid_t owner_ = ::getpid();
  std::vector<std::filesystem::path> dirs_;
};

// temp/tessera_test_NAME_PID, emptied. The process id keeps two test runs on one machine (a CI
// run beside a developer's build, two build folders) out of each other's files; a fixed name
// let one run delete the corpus another was training on. In a multi-rank test rank 0 calls this
// and hands the path to the others.
inline std::filesystem::path scratch_dir(std::string_view name) {
  namespace fs = std::filesystem;
  static ScratchDirs made;
  const fs::path dir = fs::temp_directory_path() /
                       ("tessera_test_" + std::string(name) + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  made.add(dir);
  return dir;
}

}  // namespace tessera::testing
