// Automatic restart (`tessera supervise`): runs a training command and, when it fails, runs it
// again, as torchrun's agent restarts a node's workers. The command resumes from the newest
// checkpoint that verifies (`tessera train ... --resume`), so a restart loses at most the steps
// since the last checkpoint. Typical use, one supervisor around the whole job:
//
//   tessera supervise --max-restarts 5 -- mpirun -np 8 tessera train job.toml --resume
//
// A failed rank makes mpirun end the job (or the heartbeat watchdog does: docs/DISTRIBUTED.md),
// the supervisor logs why and starts it again. What is not restarted: success (exit 0), a
// deliberate stop (exit 75, ckpt::kInterruptedExitCode: a scheduler's SIGTERM, which the
// supervisor also forwards to the command when it receives one), and a command that cannot be
// started at all.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

namespace tessera::ckpt {

struct SuperviseOptions {
  int max_restarts = 3;
  double restart_delay_s = 1;  // between a failure and the next start
};

struct SuperviseResult {
  int exit_code = 0;  // the last run's status: its exit code, or 128 + the signal that killed it
  int runs = 0;       // times the command was started
  std::vector<std::string> failures;  // why each failed run ended ("exit status 3", ...)
};

// Runs `command` (argv; searched on PATH) until it succeeds, stops on purpose, or has failed
// max_restarts + 1 times; logs each failure and restart to `log`. Throws when the command cannot
// be started (not found, not executable), naming it.
SuperviseResult supervise(const std::vector<std::string>& command, const SuperviseOptions& opt,
                          FILE* log);

}  // namespace tessera::ckpt
