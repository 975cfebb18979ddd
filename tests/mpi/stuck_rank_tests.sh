#!/usr/bin/env bash
# Ranks alive (heartbeats on time) that stop making progress (tests/mpi/stuck_rank_main.cpp):
#  - a rank stuck outside communication, as a training thread in an endless loop is: the other
#    ranks, waiting on it in a barrier, must end the job naming it;
#  - a deadlock: rank 1 waits in a recv from rank 0 while the others wait in a barrier: every
#    rank must end the job naming what each waits in;
# both within parallel.stuck_timeout_s (2 s here) plus 10 s. Prints the times.
#   tests/mpi/stuck_rank_tests.sh STUCK_RANK_BINARY MPIRUN [RANKS]
set -euo pipefail
(($# >= 2)) || {
  echo "usage: stuck_rank_tests.sh STUCK_RANK_BINARY MPIRUN [RANKS]"
  exit 2
}
bin=$1
np=${3:-2}
mpi=("$2" --oversubscribe --allow-run-as-root)
log=$(mktemp /tmp/tessera_stuck_rank.XXXXXX)
trap 'rm -f "$log"' EXIT
fail() {
  echo "FAIL: $*"
  cat "$log"
  exit 1
}

# run_job MODE: runs the program; sets elapsed_ms; fails unless the job ended non-zero in time.
run_job() {
  local start_ms rc=0
  start_ms=$(($(date +%s%N) / 1000000))
  timeout 120 "${mpi[@]}" -np "$np" "$bin" 2 "$1" >"$log" 2>&1 || rc=$?
  elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
  ((rc != 0)) || fail "$1: the job exited 0"
  ((rc != 124)) || fail "$1: the job hung until the 120 s timeout"
  if grep -q "the second barrier returned" "$log"; then fail "$1: a barrier returned"; fi
  ((elapsed_ms < 12000)) || fail "$1: ending the job took ${elapsed_ms} ms, more than 2 s + 10 s"
}

run_job stuck
grep -q "rank 1 is alive (its heartbeats arrive) but has started no communication" "$log" ||
  fail "no rank named rank 1 as stuck"
if grep "is alive (its heartbeats arrive)" "$log" | grep -qv "rank 1 is alive"; then
  fail "a rank waiting in the barrier was named as stuck"
fi
echo "[figure] $np ranks: a rank stuck outside communication was named and the job ended after" \
  "${elapsed_ms} ms (parallel.stuck_timeout_s = 2)"

run_job deadlock
if grep -q "is alive (its heartbeats arrive)" "$log"; then
  fail "deadlock: a waiting rank was named as stuck outside communication"
fi
# Rank 1's own view names its recv in full; another rank's names it from the heartbeat.
grep -q "tessera: rank 1: deadlock: every rank has waited" "$log" ||
  grep -q "tessera: rank 0: deadlock: every rank has waited" "$log" ||
  fail "deadlock: no rank reported it"
grep "deadlock: every rank" "$log" | head -1 | grep -q "rank 0: #[0-9]* barrier" ||
  fail "deadlock: the report does not name rank 0's barrier"
grep "deadlock: every rank" "$log" | head -1 | grep -Eq "rank 1: #[0-9]* recv (of f32\[4\] )?from rank 0" ||
  fail "deadlock: the report does not name rank 1's recv from rank 0"
echo "[figure] $np ranks: a deadlock (recv against barrier) was named and the job ended after" \
  "${elapsed_ms} ms: $(grep -o "Oldest unfinished.*" "$log" | head -1)"
