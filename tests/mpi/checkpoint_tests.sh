#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Checkpoints of a 2-rank run, through the tessera command under mpirun (f32, CPU):
#   1. SIGKILL at a random moment (after the Nth checkpoint appears, plus a random delay, so
#      kills land in training steps and in background saves alike), for several N; then
#      `--resume latest`: every step's loss in metrics.jsonl and the final model.safetensors
#      equal an uninterrupted run's, byte for byte. One of the kills takes down rank 1 only
#      (the survivor exits through the heartbeat watchdog), the others both ranks.
#   2. SIGTERM to both ranks (as Slurm preempts): they save a checkpoint at the same step and
#      exit with status 75; resuming again gives the uninterrupted run's losses and weights.
#   3. `tessera supervise` restarts the job by itself after each of three SIGKILLs of a random
#      rank, from the newest committed checkpoint: losses and weights again identical.
# Usage: checkpoint_tests.sh TESSERA_BINARY MPIRUN
set -uo pipefail
# shellcheck source=job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/job_setup.sh" ckpt "$@"
write_tiny_job "$work/job.toml" model.dropout=0.1 optim.warmup_steps=5 train.steps=400 \
  train.batch_size=8 train.checkpoint_every=25 train.checkpoint_keep=2 parallel.zero_stage=1


# Starts the 2-rank run in the background (appending to $2/run.log), recording each rank's pid.
start_run() {
  local out=$1
  shift
  mkdir -p "$out"
  rm -f "$out"/pid.*
  (
    exec timeout 120 "${mpi[@]}" "$@" -np 2 \
      "${with_pids[@]}" "$out" \
      "$tessera" train "$work/job.toml" --out "$out" --no-plot --resume latest >>"$out/run.log" 2>&1
  ) &
  job=$!
}

# Waits until checkpoint step $2 of run $1 is complete (its manifest exists).
wait_for_checkpoint() {
  local manifest
  manifest="$1/checkpoints/$(printf 'step_%08d' "$2")/manifest.json"
  for _ in $(seq 1 1000); do
    [[ -e $manifest ]] && return 0
    kill -0 "$job" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}

start=$(date +%s)
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" --out "$work/ref" --no-plot >"$work/ref.log" 2>&1 ||
  fail "reference run: $(tail -5 "$work/ref.log")"
[[ $(losses "$work/ref" | wc -l) -eq 400 ]] || fail "reference run: expected 400 logged steps"
echo "ok: uninterrupted 2-rank reference run in $(($(date +%s) - start)) s"

# 1. SIGKILL after checkpoint N (step 25 N) plus 0-40 ms.
for n in 2 7 10; do
  out="$work/kill$n"
  start_run "$out" $([[ $n -eq 7 ]] && echo --enable-recovery)
  wait_for_checkpoint "$out" $((25 * n)) || fail "kill $n: checkpoint $n never appeared: $(tail -5 "$out/run.log")"
  sleep "0.0$((RANDOM % 5))"
  if [[ $n -eq 7 ]]; then
    kill -9 "$(cat "$out/pid.1")"
    who="rank 1"
  else
    kill -9 "$(cat "$out/pid.0")" "$(cat "$out/pid.1")"
    who="both ranks"
  fi
  wait "$job"
  [[ ! -e $out/model.safetensors ]] || fail "kill $n: the run finished before the kill"
  killed_at=$(losses "$out" | tail -1)
  "${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" --out "$out" --no-plot --resume latest \
    >>"$out/run.log" 2>&1 || fail "kill $n: resume failed: $(tail -5 "$out/run.log")"
  from=$(grep -ao 'resuming from [^ ]*' "$out/run.log" | tail -1)
  expect_same_as_reference "$out" "kill $n"
  echo "ok: SIGKILL of $who after checkpoint $n (last logged [step, loss] $killed_at), $from: losses and weights identical"
done

# 2. SIGTERM to both ranks.
out="$work/term"
start_run "$out"
wait_for_checkpoint "$out" 100 || fail "sigterm: checkpoint at step 100 never appeared"
kill -TERM "$(cat "$out/pid.0")" "$(cat "$out/pid.1")"
wait "$job"
rc=$?
[[ $rc -eq 75 ]] || fail "sigterm: exit status $rc, expected 75: $(tail -5 "$out/run.log")"
stopped=$(grep -ao 'stopped by signal 15 after step [0-9]*' "$out/run.log") ||
  fail "sigterm: no 'stopped by signal' message: $(tail -5 "$out/run.log")"
step=${stopped##* }
[[ -e $out/checkpoints/$(printf 'step_%08d' "$step")/manifest.json ]] ||
  fail "sigterm: no checkpoint at step $step"
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" --out "$out" --no-plot --resume latest \
  >>"$out/run.log" 2>&1 || fail "sigterm: resume failed: $(tail -5 "$out/run.log")"
expect_same_as_reference "$out" "sigterm"
echo "ok: SIGTERM: both ranks saved step $step and exited with 75; resumed: losses and weights identical"
# 3. Automatic restart: `tessera supervise` around mpirun, and three SIGKILLs of a random rank at
#    random steps. Nobody resumes by hand: the supervisor restarts the job each time (mpirun
#    ends it when a rank dies). Each restart resumes from the newest checkpoint committed when
#    the rank died; the steps lost and the time to regain them (from the kill until step S + 1
#    is logged again) are printed.
out="$work/supervised"
mkdir -p "$out"
(
  exec timeout 300 "$tessera" supervise --max-restarts 5 --restart-delay 0.2 -- \
    "${mpi[@]}" -np 2 "${with_pids[@]}" "$out" \
    "$tessera" train "$work/job.toml" --out "$out" --no-plot --resume latest >"$out/run.log" 2>&1
) &
sup=$!
for k in 1 2 3; do
  target=$((30 + 110 * (k - 1) + RANDOM % 70))
  wait_for_step "$out" "$target" "$sup" "supervised kill $k"
  rank=$((RANDOM % 2))
  kill -9 "$(cat "$out/pid.$rank")"
  kill_ms=$(now_ms)
  killed_after=$(last_step "$out")
  committed=$(newest_committed "$out")
  for _ in $(seq 1 6000); do
    # Start k + 1 is the restart; it cut metrics.jsonl back to its checkpoint before starting.
    (($(starts "$out/run.log") > k)) && (($(last_step "$out") > killed_after)) && break
    sleep 0.01
  done
  regained_ms=$(($(now_ms) - kill_ms))
  from_step=$(resumed_step "$out/run.log" $((k + 1)))
  lost=$((killed_after - from_step))
  # The restart resumes from the newest checkpoint committed when the rank died (or one that
  # committed as it died): with background saves that can trail the interval by the steps a
  # save takes to commit.
  ((from_step >= committed && from_step <= killed_after)) ||
    fail "supervised: kill $k after step $killed_after resumed from step $from_step, but step $committed was committed"
  echo "ok: supervised kill $k: rank $rank after step $killed_after, restarted from step $from_step" \
    "(newest committed: $committed; $lost steps lost), progress regained in $regained_ms ms"
done
wait "$sup"
rc=$?
((rc == 0)) || fail "supervised: exit status $rc: $(tail -5 "$out/run.log")"
restarts=$(grep -c 'tessera supervise: run [0-9]* ended' "$out/run.log")
((restarts == 3)) || fail "supervised: $restarts restarts logged, expected 3"
expect_same_as_reference "$out" "supervised"
echo "ok: supervised: 3 SIGKILLs, 3 automatic restarts; losses and weights identical to the uninterrupted run"
echo "checkpoint tests: $(($(date +%s) - start)) s"
