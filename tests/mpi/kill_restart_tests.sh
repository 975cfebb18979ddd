#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Automatic restart under repeated failures (issue 16's figure): an NP-rank job (f32, CPU)
# trains under `tessera supervise` while KILLS SIGKILLs hit a random rank at random steps.
# Nobody resumes by hand: each time mpirun ends the job, the supervisor starts it again with
# `--resume latest`. Checked and printed:
#   - losses of every step and the final weights equal an uninterrupted NP-rank run's, bit for bit;
#   - each restart resumes from the newest checkpoint committed when the rank died, and loses at
#     most the checkpoint interval (saves are synchronous here: with background saves a save
#     commits a few steps after its step, and the bound grows by those steps; checkpoint_tests.sh
#     covers that case);
#   - recovery time, p50 and p95 over the kills: from the SIGKILL until the restarted job runs
#     its first step ("restart"), and until it logs a step past the one the kill interrupted
#     ("regained": the lost steps retrained too).
# Usage: kill_restart_tests.sh TESSERA_BINARY MPIRUN NP KILLS
set -uo pipefail
np=${3:?usage: kill_restart_tests.sh TESSERA_BINARY MPIRUN NP KILLS}
kills=${4:?usage: kill_restart_tests.sh TESSERA_BINARY MPIRUN NP KILLS}
# shellcheck source=job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/job_setup.sh" "restart_$np" "$1" "$2"
interval=25
spacing=30 # steps between kill targets: more than the interval, so every restart makes progress
steps=$((spacing * kills + 40))
write_tiny_job "$work/job.toml" model.dropout=0.1 optim.warmup_steps=5 train.steps=$steps \
  train.batch_size=32 train.checkpoint_every=$interval train.checkpoint_keep=2 \
  train.checkpoint_async=0 parallel.zero_stage=1
# A wider model than the tiny job's (a step of ~20 ms on 2 ranks, not ~5), so that the kills, which follow
# the logged steps, land at random points of a step and not at whatever step a poll catches.
sed -i 's/^n_embd = 32$/n_embd = 192/' "$work/job.toml"


start=$(date +%s)
"${mpi[@]}" -np "$np" "$tessera" train "$work/job.toml" --out "$work/ref" --no-plot >"$work/ref.log" 2>&1 ||
  fail "reference run: $(tail -5 "$work/ref.log")"
[[ $(losses "$work/ref" | wc -l) -eq $steps ]] || fail "reference run: expected $steps logged steps"
echo "ok: uninterrupted $np-rank reference run of $steps steps in $(($(date +%s) - start)) s"

out="$work/supervised"
mkdir -p "$out"
(
  exec timeout 900 "$tessera" supervise --max-restarts $((kills + 2)) --restart-delay 0.2 -- \
    "${mpi[@]}" -np "$np" "${with_pids[@]}" "$out" \
    "$tessera" train "$work/job.toml" --out "$out" --no-plot --resume latest >"$out/run.log" 2>&1
) &
sup=$!
restart_ms=()
regained_ms=()
lost_steps=()
for ((k = 1; k <= kills; ++k)); do
  target=$((10 + spacing * (k - 1) + RANDOM % spacing))
  wait_for_step "$out" "$target" "$sup" "kill $k"
  rank=$((RANDOM % np))
  kill -9 "$(cat "$out/pid.$rank")" || fail "kill $k: rank $rank (pid $(cat "$out/pid.$rank")) was not running"
  kill_ms=$(now_ms)
  killed_after=$(last_step "$out")
  committed=$(newest_committed "$out")
  restarted=
  for _ in $(seq 1 30000); do
    # Start k + 1 is the restart after kill k; metrics.jsonl was cut back to its checkpoint
    # before it printed its start.
    if (($(starts "$out/run.log") > k)); then
      s=$(last_step "$out")
      [[ -z $restarted ]] && started_and_stepped "$out/run.log" $((k + 1)) && restarted=$(($(now_ms) - kill_ms))
      ((${s:-0} > killed_after)) && break
    fi
    kill -0 "$sup" 2>/dev/null || fail "the supervisor ended after kill $k: $(tail -5 "$out/run.log")"
    sleep 0.01
  done
  regained=$(($(now_ms) - kill_ms))
  from_step=$(resumed_step "$out/run.log" $((k + 1)))
  lost=$((killed_after - from_step))
  ((from_step >= committed && from_step <= killed_after)) ||
    fail "kill $k after step $killed_after resumed from step $from_step, but step $committed was committed"
  ((lost <= interval)) ||
    fail "kill $k after step $killed_after resumed from step $from_step: $lost steps lost, more than the interval ($interval)"
  [[ -n $restarted ]] || fail "kill $k: no step printed by the restarted job"
  restart_ms+=("$restarted")
  regained_ms+=("$regained")
  lost_steps+=("$lost")
  echo "ok: kill $k: rank $rank after step $killed_after, restarted from step $from_step ($lost lost)," \
    "first step after $restarted ms, progress regained after $regained ms"
done
wait "$sup"
rc=$?
((rc == 0)) || fail "supervised: exit status $rc: $(tail -5 "$out/run.log")"
restarts=$(grep -c 'tessera supervise: run [0-9]* ended' "$out/run.log")
((restarts == kills)) || fail "$restarts restarts logged, expected $kills"
expect_same_as_reference "$out" "supervised"
echo "ok: $np ranks, $kills SIGKILLs of a random rank, $kills automatic restarts: losses and final" \
  "weights bit-identical to the uninterrupted run"
echo "[figure] $np ranks, $kills kills: steps lost max $(percentile 100 "${lost_steps[@]}") (interval $interval);" \
  "restart to first step p50 $(percentile 50 "${restart_ms[@]}") ms p95 $(percentile 95 "${restart_ms[@]}") ms;" \
  "progress regained p50 $(percentile 50 "${regained_ms[@]}") ms p95 $(percentile 95 "${regained_ms[@]}") ms"
echo "kill-restart tests ($np ranks): $(($(date +%s) - start)) s"
