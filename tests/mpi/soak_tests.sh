#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Soak (issue 16): a 2-rank job (f32, CPU) trains for about SECONDS of wall time while FAULTS
# faults hit it at random moments (the four kinds in turn, in a random order), and nobody
# intervenes:
#   kill     SIGKILL of a random rank (a crashed process or a lost node);
#   term     SIGTERM to every rank (a scheduler's preemption: they save and exit 75; the
#            restart loop below requeues the job, as scripts/slurm_train.sbatch does);
#   corrupt  a random byte of a random file of the newest committed checkpoint flipped, then a
#            SIGKILL: the restart must refuse that checkpoint and resume from the one before;
#   diskfull a SIGKILL, and the job's next start runs on a disk that fills up at once and has
#            room again 5 s later (TESSERA_FAULT_FS=enospc:BYTES:5, src/core/file_system.h):
#            its saves fail meanwhile and training goes on.
# `tessera supervise` restarts failed runs; a loop around it requeues deliberate stops (75).
# Checked and printed: losses of every step and the final weights equal an uninterrupted run's
# bit for bit, a corrupted checkpoint is never resumed from, and goodput: the time of the steps
# that count (each step's ms_per_step in the final metrics.jsonl: the run that produced it)
# over the wall time from the first start to the end; at least 90% is asserted for soaks of 10
# minutes or more (a restart costs ~3 s whatever the run's length, so a short soak with as many
# faults cannot reach it; CI runs a short one for the correctness checks).
# Usage: soak_tests.sh TESSERA_BINARY MPIRUN SECONDS FAULTS
set -uo pipefail
usage="usage: soak_tests.sh TESSERA_BINARY MPIRUN SECONDS FAULTS"
seconds=${3:?$usage}
nfaults=${4:?$usage}
# shellcheck source=job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/job_setup.sh" soak "$1" "$2"
interval=25

# job STEPS: the tiny job with STEPS steps, a model wide enough for ~20 ms steps (the faults
# follow the logged steps; checkpoint_tests.sh's job steps in ~5 ms).
job() {
  write_tiny_job "$work/job.toml" model.dropout=0.1 optim.warmup_steps=5 train.steps="$1" \
    train.batch_size=32 train.checkpoint_every=$interval train.checkpoint_keep=2 \
    parallel.zero_stage=1
  sed -i 's/^n_embd = 32$/n_embd = 192/' "$work/job.toml"
}

# Calibrate: the uninterrupted run's time per step, to size the job to about SECONDS.
start=$(date +%s)
job 100
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" --out "$work/calibrate" --no-plot >"$work/calibrate.log" 2>&1 ||
  fail "calibration run: $(tail -5 "$work/calibrate.log")"
per_step_us=$(jq -s '[.[] | select(.loss != null) | .ms_per_step] | add * 1000 / length | floor' \
  "$work/calibrate/metrics.jsonl")
steps=$((seconds * 1000000 / per_step_us))
((steps >= 200)) || steps=200
job "$steps"
t0=$(now_ms)
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" --out "$work/ref" --no-plot >"$work/ref.log" 2>&1 ||
  fail "reference run: $(tail -5 "$work/ref.log")"
ref_ms=$(($(now_ms) - t0))
[[ $(losses "$work/ref" | wc -l) -eq $steps ]] || fail "reference run: expected $steps logged steps"
echo "ok: uninterrupted 2-rank run of $steps steps in $((ref_ms / 1000)) s"

out="$work/soak"
mkdir -p "$out"
# A rank wrapper: records the pid (as with_pids does) and, when the injector left the file
# "diskfull", gives this start a checkpoint file system that is full.
# shellcheck disable=SC2016 # $$, $0 and $@ belong to the wrapper's own shell
wrapper=(bash -c 'f=$0/diskfull.$OMPI_COMM_WORLD_RANK
  [[ -e $f ]] && export TESSERA_FAULT_FS=enospc:$(cat "$f") && rm -f "$f"
  echo $$ >"$0/pid.$OMPI_COMM_WORLD_RANK"; exec "$@"')
soak_start=$(now_ms)
(
  while :; do
    timeout $((seconds * 4)) "$tessera" supervise --max-restarts 100 --restart-delay 0.2 -- \
      "${mpi[@]}" -np 2 "${wrapper[@]}" "$out" \
      "$tessera" train "$work/job.toml" --out "$out" --no-plot --resume latest >>"$out/run.log" 2>&1
    rc=$?
    ((rc == 75)) || exit $rc
    echo "soak: the job stopped on SIGTERM (75): requeued" >>"$out/run.log"
  done
) &
loop=$!

# Waits until the job's newest start has logged a step (it is training), or it has ended.
wait_training() {
  while kill -0 "$loop" 2>/dev/null; do
    started_and_stepped "$out/run.log" "$(starts "$out/run.log")" && return 0
    sleep 0.05
  done
  return 1
}
# flip_byte FILE: inverts one random byte of FILE in place.
flip_byte() {
  local size off byte
  size=$(stat -c %s "$1") || return 1
  ((size > 0)) || return 1
  off=$(((RANDOM * 32768 + RANDOM) % size))
  byte=$(od -An -tu1 -j "$off" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((255 - byte)))" | dd of="$1" bs=1 seek="$off" conv=notrunc status=none
}

kinds=(kill term corrupt diskfull)
declare -A count=([kill]=0 [term]=0 [corrupt]=0 [diskfull]=0)
corrupted=()
# Gaps between faults: from half to all of the uninterrupted run's time over FAULTS + 1, so all
# of them fall before the job could end (a faulted job only takes longer). Drawn around SECONDS
# (the sizing's estimate) they could add up to more than the job lasted, and the soak then
# ended before its last fault (seen under ctest -j2).
mean_gap_ms=$((ref_ms / (nfaults + 1)))
injected=0
while ((injected < nfaults)) && wait_training; do
  # The kinds in turn, each round in a random order.
  if ((injected % 4 == 0)); then
    mapfile -t order < <(printf '%s\n' "${kinds[@]}" | shuf)
  fi
  gap=$((mean_gap_ms / 2 + (RANDOM * 32768 + RANDOM) % (mean_gap_ms / 2 + 1)))
  deadline=$(($(now_ms) + gap))
  while (($(now_ms) < deadline)) && kill -0 "$loop" 2>/dev/null; do sleep 0.05; done
  kill -0 "$loop" 2>/dev/null || break
  wait_training || break
  fault=${order[$((injected % 4))]}
  p0=$(cat "$out/pid.0") p1=$(cat "$out/pid.1")
  case $fault in
    kill) kill -9 "$([[ $((RANDOM % 2)) == 0 ]] && echo "$p0" || echo "$p1")" ;;
    term) kill -TERM "$p0" "$p1" ;;
    corrupt)
      # Only with an older checkpoint to fall back on (a run with none starts afresh).
      (($(find "$out/checkpoints" -name manifest.json | wc -l) >= 2)) || continue
      dir=$out/checkpoints/$(printf 'step_%08d' "$(newest_committed "$out")")
      mapfile -t files < <(find "$dir" -type f)
      flip_byte "${files[$((RANDOM % ${#files[@]}))]}" || continue
      corrupted+=("$dir")
      kill -9 "$p0"
      ;;
    diskfull)
      # Room for the restart to cut metrics.jsonl back (rewritten through the same file
      # system), not for a checkpoint (~11 MB): its saves fail for 5 s, until space is freed.
      free=$(($(stat -c %s "$out/metrics.jsonl") + 1000000)):5
      echo "$free" >"$out/diskfull.0"
      echo "$free" >"$out/diskfull.1"
      kill -9 "$p1"
      ;;
  esac
  count[$fault]=$((count[$fault] + 1))
  injected=$((injected + 1))
  echo "soak: $fault at step $(last_step "$out") ($((($(now_ms) - soak_start) / 1000)) s)"
done
wait "$loop"
rc=$?
wall_ms=$(($(now_ms) - soak_start))
((rc == 0)) || fail "the soaked job ended with status $rc: $(tail -5 "$out/run.log")"
total=$((count[kill] + count[term] + count[corrupt] + count[diskfull]))
((total == nfaults)) || fail "$total faults were injected, not $nfaults (the job ended first)"
for dir in "${corrupted[@]}"; do
  grep -aq "resuming from $dir " "$out/run.log" && fail "resumed from the corrupted checkpoint $dir"
done
((count[corrupt] == 0)) || grep -aq "skipping a checkpoint that does not verify" "$out/run.log" ||
  fail "no corrupted checkpoint was reported as skipped"
((count[diskfull] == 0)) || grep -aq "checkpoint: saving step [0-9]* failed" "$out/run.log" ||
  fail "no save failed on the full file system"
expect_same_as_reference "$out" "soak"
step_ms() { jq -s '[.[] | select(.loss != null) | .ms_per_step] | add | floor' "$1/metrics.jsonl"; }
useful_ms=$(step_ms "$out")
ref_goodput=$(($(step_ms "$work/ref") * 1000 / ref_ms))
goodput=$((useful_ms * 1000 / wall_ms))
echo "ok: soak: $total faults (kill ${count[kill]}, term ${count[term]}, corrupt ${count[corrupt]}," \
  "diskfull ${count[diskfull]}); losses and final weights bit-identical to the uninterrupted run"
echo "[figure] soak, 2 ranks, $((wall_ms / 1000)) s, $total faults: goodput $((goodput / 10)).$((goodput % 10))%" \
  "(steps $((useful_ms / 1000)) s of $((wall_ms / 1000)) s wall; the uninterrupted run:" \
  "$((ref_ms / 1000)) s, goodput $((ref_goodput / 10)).$((ref_goodput % 10))%)"
((seconds < 600 || goodput >= 900)) || fail "goodput $((goodput / 10)).$((goodput % 10))% is below 90%"
echo "soak tests: $(($(date +%s) - start)) s"
