#!/usr/bin/env bash
# Waits until the machine's CPUs are idle (other users' builds and runs skew benchmarks on a
# shared 2-core box): samples /proc/stat over 1 s and returns once the busy fraction stays below
# QUIET_BUSY (default 0.10) for QUIET_SECONDS (default 3) consecutive samples, or after
# QUIET_MAX_WAIT seconds (default 600), printing a warning then.
#   bench/peers/wait_quiet.sh && ./build-perf/bench_train_step ...
set -euo pipefail
busy_max="${QUIET_BUSY:-0.10}"
need="${QUIET_SECONDS:-3}"
max_wait="${QUIET_MAX_WAIT:-600}"

sample() {  # prints the busy fraction of all CPUs over one second
  read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ < /proc/stat
  sleep 1
  read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ < /proc/stat
  local idle=$(( (b4 + b5) - (a4 + a5) ))
  local total=$(( (b1+b2+b3+b4+b5+b6+b7+b8) - (a1+a2+a3+a4+a5+a6+a7+a8) ))
  # Parenthesised: a bare "t > 0" in printf's arguments is awk's output redirection (to a file
  # named 0), which left the busy fraction empty.
  awk -v i="$idle" -v t="$total" 'BEGIN { printf "%.3f", (t > 0 ? 1 - i / t : 0) }'
}

start=$SECONDS
quiet=0
while (( quiet < need )); do
  b=$(sample)
  if awk -v b="$b" -v m="$busy_max" 'BEGIN { exit !(b < m) }'; then
    quiet=$((quiet + 1))
  else
    quiet=0
  fi
  if (( SECONDS - start > max_wait )); then
    echo "wait_quiet: CPUs still busy ($b) after ${max_wait}s; measuring anyway" >&2
    exit 0
  fi
done
