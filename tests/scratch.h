// A test's own folder under the system temp directory.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace tessera::testing {

// temp/tessera_test_NAME_PID, emptied. The process id keeps two test runs on one machine (a CI
// run beside a developer's build, two build folders) out of each other's files; a fixed name
// let one run delete the corpus another was training on. In a multi-rank test rank 0 calls this
// and hands the path to the others.
inline std::filesystem::path scratch_dir(std::string_view name) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() /
                       ("tessera_test_" + std::string(name) + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

}  // namespace tessera::testing
