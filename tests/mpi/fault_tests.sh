#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Fault handling of distributed runs, through the tessera command under mpirun:
#   1. ranks started with different configs stop at start-up with an error naming the key;
#   2. a rank killed mid-run makes the other ranks exit within parallel.timeout_s with a message
#      naming it, instead of hanging. mpirun runs with --enable-recovery, so that mpirun itself
#      does not tear the job down when a rank dies (as srun leaves the other tasks running):
#      what stops the survivors is Tessera's heartbeat watchdog (src/dist/mpi_comm.h);
#   3. a rank stopped by SIGSTOP (alive, silent) is caught the same way, within the timeout
#      plus 10 s.
# Usage: fault_tests.sh TESSERA_BINARY MPIRUN
set -uo pipefail
# shellcheck source=job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/job_setup.sh" faults "$@"
write_tiny_job "$work/job.toml" optim.warmup_steps=2 train.steps=1000000 train.batch_size=6

# 1. Different configs on the two ranks (an MPMD launch: one command line per rank).
start=$(date +%s)
out=$(timeout 60 "${mpi[@]}" \
  -np 1 "$tessera" train "$work/job.toml" train.steps=5 train.batch_size=8 --out "$work/a" --no-plot : \
  -np 1 "$tessera" train "$work/job.toml" train.steps=5 train.batch_size=16 --out "$work/a" --no-plot 2>&1)
rc=$?
echo "$out" | grep -a "tessera: rank" | head -4
[[ $rc -ne 0 && $rc -ne 124 ]] || fail "mismatched configs: exit status $rc (0 = trained anyway, 124 = hung)"
grep -aq "disagree on train.batch_size: 8 on rank 0, 16 on rank 1" <<<"$out" ||
  fail "mismatched configs: no message naming train.batch_size and both values"
echo "ok: mismatched configs stopped in $(($(date +%s) - start)) s naming train.batch_size"

# 2. Kill rank 1 of 3 once training is under way.
(
  exec timeout 60 "${mpi[@]}" --enable-recovery -np 3 \
    "${with_pids[@]}" "$work" \
    "$tessera" train "$work/job.toml" --out "$work/b" --no-plot >"$work/kill.log" 2>&1
) &
job=$!
for _ in $(seq 1 300); do
  [[ -s "$work/b/metrics.jsonl" && -s "$work/pid.1" ]] && break
  sleep 0.1
done
[[ -s "$work/b/metrics.jsonl" ]] || fail "the 3-rank run did not start training: $(tail -5 "$work/kill.log")"
kill -9 "$(cat "$work/pid.1")"
killed_ms=$(($(date +%s%N) / 1000000))
wait "$job"
rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - killed_ms))
grep -a "stopped responding" "$work/kill.log"
[[ $rc -ne 124 ]] || fail "killed rank: the survivors hung (still running after 60 s)"
for r in 0 2; do
  grep -aq "tessera: rank $r: rank 1 stopped responding" "$work/kill.log" ||
    fail "killed rank: rank $r did not report rank 1: $(tail -5 "$work/kill.log")"
done
# Heartbeats stop at the kill; the survivors must be gone within the 3 s timeout plus slack
# for an oversubscribed machine.
((elapsed_ms < 8000)) || fail "killed rank: the survivors took $elapsed_ms ms to exit (timeout_s = 3)"
echo "ok: after rank 1 was killed the others exited in $elapsed_ms ms naming it"

# 3. Suspend rank 1 of 3 (SIGSTOP) mid-run: the others exit naming it.
suspend_rank_1 suspended 3
