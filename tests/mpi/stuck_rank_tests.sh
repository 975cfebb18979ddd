#!/usr/bin/env bash
# A rank alive (heartbeats on time) but stuck outside communication, as a deadlocked training
# thread is: the other ranks, waiting on it in a barrier, must end the job naming it within
# parallel.stuck_timeout_s (2 s here) plus 10 s. Prints the time it took.
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
start_ms=$(($(date +%s%N) / 1000000))
rc=0
timeout 120 "${mpi[@]}" -np "$np" "$bin" 2 >"$log" 2>&1 || rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
fail() {
  echo "FAIL: $*"
  cat "$log"
  exit 1
}
((rc != 0)) || fail "the job exited 0"
((rc != 124)) || fail "the job hung until the 120 s timeout"
grep -q "rank 1 is alive (its heartbeats arrive) but has started no communication" "$log" ||
  fail "no rank named rank 1 as stuck"
if grep "is alive (its heartbeats arrive)" "$log" | grep -qv "rank 1 is alive"; then
  fail "a rank waiting in the barrier was named as stuck"
fi
if grep -q "the second barrier returned" "$log"; then fail "a barrier returned past the stuck rank"; fi
((elapsed_ms < 12000)) || fail "ending the job took ${elapsed_ms} ms, more than the 2 s timeout + 10 s"
echo "[figure] $np ranks: a rank stuck outside communication was named and the job ended after" \
  "${elapsed_ms} ms (parallel.stuck_timeout_s = 2)"
