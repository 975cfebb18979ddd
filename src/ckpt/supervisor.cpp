#include "ckpt/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "ckpt/signals.h"
#include "core/error.h"

namespace tessera::ckpt {
namespace {

volatile sig_atomic_t g_child = 0;      // the running command's pid (0: none)
volatile sig_atomic_t g_forwarded = 0;  // a stop signal the supervisor passed on

void forward_stop(int sig) {
  g_forwarded = sig;
  if (g_child > 0) ::kill(pid_t(g_child), sig);
}

// SIGTERM and SIGINT go to the command while the supervisor runs; the previous handlers return
// after.
class ForwardStopSignals {
 public:
  ForwardStopSignals() {
    struct sigaction sa {};
    sa.sa_handler = forward_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGINT, &sa, &old_int_);
    g_forwarded = 0;
  }
  ~ForwardStopSignals() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
  }

 private:
  struct sigaction old_term_ {
  }, old_int_{};
};

std::string quoted(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// Starts the command; throws, naming it, when exec fails (reported through a close-on-exec
// pipe: it closes unread when exec succeeds).
pid_t start(const std::vector<std::string>& command) {
  int fds[2];
  TS_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "supervise: pipe: {}", std::strerror(errno));
  std::vector<char*> argv;
  for (const std::string& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    ::execvp(argv[0], argv.data());
    const int err = errno;
    (void)!::write(fds[1], &err, sizeof err);
    ::_exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    fail("supervise: fork: {}", std::strerror(errno));
  }
  int err = 0;
  ssize_t got;
  do got = ::read(fds[0], &err, sizeof err);
  while (got < 0 && errno == EINTR);
  ::close(fds[0]);
  if (got == ssize_t(sizeof err)) {
    ::waitpid(pid, nullptr, 0);
    fail("supervise: cannot run '{}': {}", command[0], std::strerror(err));
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    TS_CHECK(errno == EINTR, "supervise: waitpid: {}", std::strerror(errno));
  }
  return status;
}

}  // namespace

SuperviseResult supervise(const std::vector<std::string>& command, const SuperviseOptions& opt,
                          FILE* log) {
  TS_CHECK(!command.empty(), "supervise: no command given (tessera supervise -- COMMAND ...)");
  TS_CHECK(opt.max_restarts >= 0 && opt.restart_delay_s >= 0,
           "supervise: --max-restarts {} and --restart-delay {} must not be negative",
           opt.max_restarts, opt.restart_delay_s);
  ForwardStopSignals forward;
  SuperviseResult r;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t pid = start(command);
    g_child = pid;
    ++r.runs;
    const int status = wait_for(pid);
    g_child = 0;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (WIFEXITED(status)) {
      r.exit_code = WEXITSTATUS(status);
      if (r.exit_code == 0 || r.exit_code == kInterruptedExitCode || g_forwarded) return r;
      r.failures.push_back(fmt::format("exit status {}", r.exit_code));
    } else {
      const int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      r.exit_code = 128 + sig;
      if (g_forwarded) return r;
      r.failures.push_back(fmt::format("killed by signal {} ({})", sig, strsignal(sig)));
    }
    const int restarts = r.runs - 1;
    if (restarts >= opt.max_restarts) {
      std::fprintf(log,
                   "tessera supervise: run %d ended after %.1f s: %s; giving up after %d restarts "
                   "(--max-restarts %d)\n",
                   r.runs, secs, r.failures.back().c_str(), restarts, opt.max_restarts);
      std::fflush(log);
      return r;
    }
    std::fprintf(
        log,
        "tessera supervise: run %d ended after %.1f s: %s; restarting (%d of %d) in %.1f s: %s\n",
        r.runs, secs, r.failures.back().c_str(), restarts + 1, opt.max_restarts,
        opt.restart_delay_s, quoted(command).c_str());
    std::fflush(log);
    std::this_thread::sleep_for(std::chrono::duration<double>(opt.restart_delay_s));
    if (g_forwarded) return r;  // stopped while waiting to restart
  }
}

}  // namespace tessera::ckpt
