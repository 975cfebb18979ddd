#include "ckpt/signals.h"

#include <signal.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <ctime>

#include "core/error.h"

namespace tessera::ckpt {
namespace {

volatile std::sig_atomic_t g_requested = 0;
volatile int64_t g_first_request_ms = 0;  // CLOCK_MONOTONIC; written by the handler only
std::atomic<bool> g_installed{false};
struct sigaction g_old_term, g_old_int;

extern "C" void on_stop_signal(int sig) {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe
  const int64_t now_ms = int64_t(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
  if (g_requested == sig) {
    // The same signal within kDuplicateWindowMs of the first is one request delivered twice:
    // a scheduler may reach a process more than once (Slurm signals each process of a step),
    // and ending the rank then would lose the checkpoint the first one asked for.
    if (now_ms - g_first_request_ms < kDuplicateWindowMs) return;
    // Asked again: the user (or scheduler) does not want to wait for the checkpoint.
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  g_first_request_ms = now_ms;
  g_requested = sig;
}

}  // namespace

StopSignals::StopSignals() {
  TS_CHECK(!g_installed.exchange(true), "StopSignals: the handlers are already installed");
  g_requested = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking reads and collectives carry on; the loop checks later
  ::sigaction(SIGTERM, &sa, &g_old_term);
  ::sigaction(SIGINT, &sa, &g_old_int);
}

StopSignals::~StopSignals() {
  ::sigaction(SIGTERM, &g_old_term, nullptr);
  ::sigaction(SIGINT, &g_old_int, nullptr);
  g_installed = false;
}

int stop_requested() {
  return int(g_requested);
}

void request_stop(int signal) {
  g_requested = signal;
}

}  // namespace tessera::ckpt
