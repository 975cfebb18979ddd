// `tessera supervise` (ckpt/supervisor.h): restarts a failing command, logs why, gives up after
// --max-restarts, leaves success and deliberate stops (exit 75) alone, forwards SIGTERM, and
// refuses a command it cannot start. The commands are small shell scripts; a counter file makes
// one fail a given number of times.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "ckpt/supervisor.h"
#include "core/file_io.h"
#include "gradcheck.h"
#include "scratch.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

struct Supervised {
  ckpt::SuperviseResult result;
  std::string log;
};

Supervised run_sh(const std::string& script, int max_restarts) {
  const fs::path dir = tessera::testing::scratch_dir("supervisor");
  const fs::path log_path = dir / "log.txt";
  FILE* log = std::fopen(log_path.c_str(), "w");
  ckpt::SuperviseOptions o;
  o.max_restarts = max_restarts;
  o.restart_delay_s = 0.01;
  Supervised s;
  s.result = ckpt::supervise({"sh", "-c", script, "sh", dir.string()}, o, log);
  std::fclose(log);
  s.log = read_small_file(log_path.string(), 1 << 20);
  return s;
}

// Fails with status 3 until it has run `failures` times, then succeeds. $1: the scratch folder.
std::string fail_times(int failures) {
  return "n=$(cat \"$1/count\" 2>/dev/null || echo 0); echo $((n + 1)) > \"$1/count\"; "
         "[ \"$n\" -ge " +
         std::to_string(failures) + " ] || exit 3";
}

}  // namespace

TEST(Supervise, ASucceedingCommandRunsOnce) {
  const Supervised s = run_sh("exit 0", 3);
  EXPECT_EQ(s.result.exit_code, 0);
  EXPECT_EQ(s.result.runs, 1);
  EXPECT_EQ(s.log, "");
}

TEST(Supervise, FailuresAreRestartedAndLogged) {
  const Supervised s = run_sh(fail_times(2), 3);
  EXPECT_EQ(s.result.exit_code, 0);
  EXPECT_EQ(s.result.runs, 3);
  EXPECT_EQ(s.result.failures, (std::vector<std::string>{"exit status 3", "exit status 3"}));
  EXPECT_NE(s.log.find("run 1 ended after"), std::string::npos) << s.log;
  EXPECT_NE(s.log.find("exit status 3; restarting (1 of 3)"), std::string::npos) << s.log;
  EXPECT_NE(s.log.find("restarting (2 of 3)"), std::string::npos) << s.log;
}

TEST(Supervise, GivesUpAfterMaxRestartsWithTheLastStatus) {
  const Supervised s = run_sh(fail_times(100), 2);
  EXPECT_EQ(s.result.exit_code, 3);
  EXPECT_EQ(s.result.runs, 3);
  EXPECT_NE(s.log.find("run 3 ended after"), std::string::npos) << s.log;
  EXPECT_NE(s.log.find("giving up after 2 restarts (--max-restarts 2)"), std::string::npos)
      << s.log;
}

TEST(Supervise, AKilledCommandIsRestarted) {
  // Killed by SIGKILL the first time (as a rank the OOM killer takes), fine the second.
  const Supervised s =
      run_sh("if [ ! -e \"$1/killed\" ]; then touch \"$1/killed\"; kill -9 $$; fi; exit 0", 3);
  EXPECT_EQ(s.result.exit_code, 0);
  EXPECT_EQ(s.result.runs, 2);
  ASSERT_EQ(s.result.failures.size(), 1u);
  EXPECT_EQ(s.result.failures[0].rfind("killed by signal 9", 0), 0u) << s.result.failures[0];
}

TEST(Supervise, ADeliberateStopIsNotRestarted) {
  const Supervised s = run_sh("exit 75", 3);  // ckpt::kInterruptedExitCode
  EXPECT_EQ(s.result.exit_code, 75);
  EXPECT_EQ(s.result.runs, 1);
}

TEST(Supervise, SigtermIsForwardedAndEndsSupervision) {
  // The command saves and exits 75 on SIGTERM, as `tessera train` does. The signal goes to the
  // supervisor once the command runs (its handler is in place by then).
  const fs::path started = fs::temp_directory_path() /
                           ("tessera_test_supervisor_" + std::to_string(::getpid())) / "started";
  std::thread stopper([&] {
    for (int i = 0; i < 3000 && !fs::exists(started); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::kill(::getpid(), SIGTERM);
  });
  const Supervised s = run_sh("trap 'exit 75' TERM; touch \"$1/started\"; sleep 30 & wait", 3);
  stopper.join();
  EXPECT_EQ(s.result.exit_code, 75);
  EXPECT_EQ(s.result.runs, 1);
}

TEST(Supervise, ACommandThatCannotStartIsAnError) {
  ckpt::SuperviseOptions o;
  tessera::testing::expect_error(
      [&] {
        ckpt::supervise({"/nonexistent/tessera-trainer", "x"}, o, stderr);
      },
      {"cannot run '/nonexistent/tessera-trainer'", "No such file"});
  tessera::testing::expect_error([&] { ckpt::supervise({}, o, stderr); }, {"no command"});
}
