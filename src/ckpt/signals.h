// Graceful stop on SIGTERM / SIGINT (how Slurm and most schedulers preempt a job, and Ctrl-C):
// the handler only records the signal; the training loop checks it between steps, agrees on it
// across ranks, saves a checkpoint and exits with kInterruptedExitCode. A second signal of the
// same kind while the first is being handled ends the process at once (default action), unless
// it comes within kDuplicateWindowMs of the first: that is the same request delivered twice.
#pragma once
#include <cstdint>

namespace tessera::ckpt {

// EX_TEMPFAIL (sysexits.h): "try again later" -- the run stopped cleanly and can be resumed.
inline constexpr int kInterruptedExitCode = 75;
// A repeat of the stop signal this soon after the first is a duplicate delivery, not a second
// request (a scheduler may signal a process twice: Slurm signals each process of a step).
inline constexpr int64_t kDuplicateWindowMs = 2000;

// Installs the handlers for its lifetime (restoring the previous ones after) and clears any
// earlier request. One at a time.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

// The signal that asked to stop (SIGTERM, SIGINT), or 0.
int stop_requested();
// What the handler does, for tests and callers that stop a run themselves.
void request_stop(int signal);

}  // namespace tessera::ckpt
