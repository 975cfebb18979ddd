#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Tessera under Slurm, on a private one-node cluster started here (local_cluster.sh):
#   1. `srun --mpi=pmix -n 2 tessera train` (Slurm's launcher, PMIx wiring up Open MPI) trains
#      the same losses and weights as `mpirun -np 2`, bit for bit;
#   2. scripts/slurm_train.sbatch, the example batch script, as given but for its GPU request
#      (this cluster has none) and sizes: a rank SIGKILLed mid-run ends the step
#      (--kill-on-bad-exit), the supervisor restarts it inside the allocation, and the job
#      completes with the uninterrupted run's losses and weights;
#   3. the same script preempted: SIGTERM to the batch shell (what --signal=B:TERM@120 sends
#      before the time limit) makes every rank save and exit 75, the script requeues the job,
#      Slurm runs it again, it resumes from that checkpoint and completes, again bit-identical.
# Prints the time each part took (about 4 minutes in all: Slurm holds a requeued job back for
# two). Skips (exit 77) without root or without the Slurm and munge daemons.
# Usage: slurm_tests.sh TESSERA_BINARY MPIRUN
set -uo pipefail
(($(id -u) == 0)) || {
  echo "SKIP: needs root (slurmd switches to the submitting user)"
  exit 77
}
for d in slurmctld slurmd munged; do
  [[ -x /usr/sbin/$d ]] || {
    echo "SKIP: /usr/sbin/$d is not installed (Debian: slurmctld slurmd slurm-client munge)"
    exit 77
  }
done
# shellcheck source=../mpi/job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/../mpi/job_setup.sh" slurm "$@"
# shellcheck source=local_cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/local_cluster.sh"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tessera=$(readlink -f "$tessera") # the batch script runs in another folder
start_local_slurm "$work/slurm" || fail "the local Slurm cluster did not start"
trap 'stop_local_slurm "$work/slurm"; [[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT

steps=300
write_tiny_job "$work/job.toml" model.dropout=0.1 optim.warmup_steps=5 train.steps=$steps \
  train.batch_size=32 train.checkpoint_every=25 train.checkpoint_keep=2 \
  train.checkpoint_async=0 parallel.zero_stage=1
sed -i 's/^n_embd = 32$/n_embd = 192/' "$work/job.toml" # ~20 ms a step: kills land mid-run

start=$(date +%s)
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" --out "$work/ref" --no-plot >"$work/ref.log" 2>&1 ||
  fail "reference run under mpirun: $(tail -5 "$work/ref.log")"
echo "ok: uninterrupted 2-rank run under mpirun, $steps steps, in $(($(date +%s) - start)) s"

# 1. srun as the launcher.
start=$(date +%s)
timeout 300 srun --mpi=pmix -n 2 "$tessera" train "$work/job.toml" --out "$work/srun" --no-plot \
  >"$work/srun.log" 2>&1 || fail "srun --mpi=pmix -n 2: $(tail -5 "$work/srun.log")"
grep -q "2 ranks = pp 1 x dp 2" "$work/srun.log" || fail "srun: not one 2-rank job: $(head -3 "$work/srun.log")"
expect_same_as_reference "$work/srun" "srun --mpi=pmix -n 2"
echo "ok: srun --mpi=pmix -n 2: losses and weights bit-identical to mpirun's ($(($(date +%s) - start)) s)"

# The example script, without the GPU request; the sizes are given on sbatch's command line.
sed '/--gpus-per-task/d' "$repo/scripts/slurm_train.sbatch" >"$work/train.sbatch"
# submit NAME: submits the example for run folder $work/NAME; prints the job id.
submit() {
  sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --output="$work/$1.out" \
    --export=ALL,TESSERA="$tessera",TESSERA_MAX_RESTARTS=3 --chdir="$work" \
    "$work/train.sbatch" "$work/job.toml" "$work/$1"
}
job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
# wait_done JOB NAME SECONDS: waits until the job has completed; fails on any other end.
wait_done() {
  local s
  for _ in $(seq 1 $((10 * $3))); do
    s=$(job_state "$1")
    case $s in
      COMPLETED) return 0 ;;
      FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY)
        fail "$2: job $1 ended $s: $(tail -5 "$work/$2.out")" ;;
    esac
    sleep 0.1
  done
  fail "$2: job $1 not done after $3 s (state $s): $(tail -5 "$work/$2.out")"
}
# wait_step NAME STEP: waits until run NAME has logged STEP.
wait_step() {
  local s
  for _ in $(seq 1 1200); do
    s=$(last_step "$work/$1")
    ((${s:-0} >= $2)) && return 0
    sleep 0.05
  done
  fail "$1: step $2 not reached in 60 s: $(tail -5 "$work/$1.out")"
}

# 2. A rank killed: restarted inside the allocation.
start=$(date +%s)
job=$(submit kill) || fail "sbatch: $job"
wait_step kill 100
pid=$(pgrep -f "^$tessera train $work/job.toml .*--out $work/kill " | head -1)
[[ -n $pid ]] || fail "kill: no rank of job $job found"
kill -9 "$pid"
killed_at=$(last_step "$work/kill")
wait_done "$job" kill 300
grep -q "tessera supervise: run 1 ended" "$work/kill.out" ||
  fail "kill: the supervisor did not log the failed run: $(tail -5 "$work/kill.out")"
grep -q "resuming from" "$work/kill.out" || fail "kill: the restart did not resume: $(tail -5 "$work/kill.out")"
expect_same_as_reference "$work/kill" "sbatch, a rank killed at step $killed_at"
echo "ok: sbatch scripts/slurm_train.sbatch: a rank SIGKILLed after step $killed_at, restarted by" \
  "the supervisor inside the allocation, completed bit-identical ($(($(date +%s) - start)) s)"

# 3. Preempted: SIGTERM to the batch shell; the ranks save, the script requeues the job.
start=$(date +%s)
job=$(submit term) || fail "sbatch: $job"
wait_step term 100
# The ranks are frozen while the signal travels (batch shell -> scancel -> slurmctld -> slurmd ->
# the tasks: seconds on a loaded machine, and the 200 steps left take about 4): otherwise the run
# can finish before the signal lands, and nothing is left to preempt.
mapfile -t ranks < <(pgrep -f "^$tessera train $work/job.toml .*--out $work/term ")
((${#ranks[@]} == 2)) || fail "term: expected 2 ranks of job $job, found ${#ranks[@]}"
kill -STOP "${ranks[@]}"
termed_at=$(last_step "$work/term")
# What --signal=B:TERM@120 does before the time limit: SIGTERM to the batch shell alone.
shell=$(pgrep -f "$work/slurm/spool/job$(printf %05d "$job")/slurm_script" | head -1)
[[ -n $shell ]] || fail "term: the batch shell of job $job was not found"
kill -TERM "$shell"
# sigterm_pending PID: whether SIGTERM (signal 15, bit 14) waits in the process's pending set.
sigterm_pending() { (((0x$(awk '/^ShdPnd:/ {print $2}' "/proc/$1/status") >> 14) & 1)); }
for rank in "${ranks[@]}"; do
  for _ in $(seq 1 600); do
    sigterm_pending "$rank" && break
    sleep 0.1
  done
  sigterm_pending "$rank" || fail "term: SIGTERM did not reach rank process $rank within 60 s"
done
kill -CONT "${ranks[@]}"
wait_for_text "$work/term.out" "requeueing job $job" ||
  fail "term: the script did not requeue the job: $(tail -5 "$work/term.out")"
# Slurm holds a requeued job back for about two minutes before it runs it again. (Not shortened
# with `scontrol update StartTime=now`: on the same node the new incarnation of step 0 then finds
# the old one's PMIx socket still bound and fails to launch.)
wait_done "$job" term 400
saved=$(grep -ao "resuming from [^ ]*step_[0-9]*" "$work/term.out" | tail -1)
[[ -n $saved ]] || fail "term: the requeued job did not resume: $(tail -5 "$work/term.out")"
expect_same_as_reference "$work/term" "sbatch, preempted at step $termed_at"
echo "ok: sbatch scripts/slurm_train.sbatch: SIGTERM to the batch shell after step $termed_at:" \
  "the ranks saved, the job requeued itself, ran again ${saved}, completed bit-identical" \
  "($(($(date +%s) - start)) s)"
