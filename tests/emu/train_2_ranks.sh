#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `tessera train train.device=cuda` on 2 ranks of the emulated CUDA device (mpirun, emulated
# NCCL): data parallel with ZeRO stages 0-3, tensor (with sequence), pipeline and context
# parallel, each against the same job on one CPU rank. The
# GPU path sums in other orders (cuBLASLt's reference GEMM, f64 block reductions, a reduction
# tree over ranks), so losses are compared to a relative bound (the one tests/cuda uses for
# the first steps, 1e-4), not bit for bit. Also: a checkpoint of the 2-rank GPU run resumes
# on one CPU rank, ZeRO-3's evaluation matches one CPU rank's, and a rank suspended by SIGSTOP is
# named by the other.
# Usage: train_2_ranks.sh TESSERA_BINARY MPIRUN
set -uo pipefail
# shellcheck source=../mpi/job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/../mpi/job_setup.sh" emu_train "$@"
write_tiny_job "$work/job.toml" optim.warmup_steps=2 train.steps=8 train.batch_size=8 \
  train.checkpoint_every=4 train.checkpoint_keep=2

losses() { jq -r '.loss' "$1/metrics.jsonl"; }

# The largest relative difference between two runs' losses, step by step.
max_rel_diff() {
  paste <(losses "$1") <(losses "$2") |
    awk '{d = $1 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r}
         END {printf "%.3e", m}'
}

# expect_close WHAT RUN REFERENCE: RUN's losses within 1e-4 relative of REFERENCE's.
expect_close() {
  local err
  err=$(max_rel_diff "$2" "$3")
  awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
    fail "$1: losses differ from one CPU rank by $err relative (bound 1e-4)"
  echo "[cmp] $1: losses | f32 | $err | 1.0e-04 | PASS"
}

# expect_same_val NAME REFERENCE: the last evaluation's val_loss of $work/NAME within 1e-4
# relative of REFERENCE's.
expect_same_val() {
  local a b
  a=$(jq -r 'select(.val_loss != null) | .val_loss' "$work/$1/metrics.jsonl" | tail -1)
  b=$(jq -r 'select(.val_loss != null) | .val_loss' "$2/metrics.jsonl" | tail -1)
  [[ -n $a && -n $b ]] || fail "$1: no val_loss to compare (got '$a' and '$b')"
  awk -v a="$a" -v b="$b" 'BEGIN {d = a - b; if (d < 0) d = -d; exit !(d / b <= 1e-4)}' ||
    fail "$1: val_loss $a differs from one CPU rank's $b by more than 1e-4 relative"
  echo "[cmp] 2 emulated GPUs, $1 vs 1 CPU rank: val_loss $a vs $b | f32 | 1.0e-04 | PASS"
}

# on_gpus NAME REFERENCE KEY=VALUE...: the job on 2 ranks of the emulated device with the keys,
# into $work/NAME, its losses against the CPU run REFERENCE.
on_gpus() {
  local name=$1 ref=$2 start
  shift 2
  start=$(date +%s)
  "${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" train.device='"cuda"' "$@" \
    --out "$work/$name" --no-plot >"$work/$name.log" 2>&1 ||
    fail "2 ranks on the emulated device, $name: $(tail -5 "$work/$name.log")"
  grep -q "nccl" "$work/$name.log" || fail "$name: the log does not mention NCCL"
  expect_close "2 emulated GPUs, $name vs 1 CPU rank ($(($(date +%s) - start)) s)" \
    "$work/$name" "$ref"
}

# resumed_on_cpu NAME REFERENCE KEY=VALUE...: NAME's step-4 checkpoint (saved in the whole
# model's layout, whatever split the GPUs ran) continued on one CPU rank ends where REFERENCE
# ends.
resumed_on_cpu() {
  local name=$1 ref=$2
  shift 2
  "$tessera" train "$work/job.toml" "$@" --out "$work/$name" --no-plot \
    --resume "$work/$name/checkpoints/step_00000004" >"$work/$name.resume.log" 2>&1 ||
    fail "resume of $name's checkpoint on the CPU: $(tail -5 "$work/$name.resume.log")"
  expect_close "2 emulated GPUs, $name -> 1 CPU rank resume" "$work/$name" "$ref"
}

"$tessera" train "$work/job.toml" --out "$work/cpu" --no-plot >"$work/cpu.log" 2>&1 ||
  fail "one CPU rank: $(tail -5 "$work/cpu.log")"
[[ $(losses "$work/cpu" | wc -l) -eq 8 ]] || fail "one CPU rank: expected 8 logged steps"
"$tessera" train "$work/job.toml" train.micro_batches=2 --out "$work/cpu_micro2" --no-plot \
  >"$work/cpu_micro2.log" 2>&1 || fail "one CPU rank, 2 micro-batches: $(tail -5 "$work/cpu_micro2.log")"

for stage in 0 1 2 3; do
  on_gpus "zero$stage" "$work/cpu" parallel.zero_stage=$stage
done
resumed_on_cpu zero1 "$work/cpu"
# ZeRO-3's evaluation runs the staged forward (the ranks in lockstep) and its checkpoint reaches
# the host unit by unit: the same val_loss as one CPU rank, and the checkpoint continues there.
expect_same_val zero3 "$work/cpu"
resumed_on_cpu zero3 "$work/cpu"
# ZeRO-2 with 2 micro-batches: the second's gradients reduced into the shard beside it and added
# on the device once their reduce-scatter is complete.
on_gpus zero2_micro2 "$work/cpu_micro2" parallel.zero_stage=2 train.micro_batches=2
# Tensor with sequence parallelism: the layers' all-gathers and reduce-scatters on NCCL.
on_gpus tp2_sequence_parallel "$work/cpu" parallel.tp=2 parallel.sequence_parallel=1
resumed_on_cpu tp2_sequence_parallel "$work/cpu"
# ZeRO under tensor parallelism: the step decided on the device sums each rank's counted shard.
on_gpus tp2_zero1 "$work/cpu" parallel.tp=2 parallel.zero_stage=1
# Pipeline parallelism: activations and their gradients by NCCL's send/recv between the stages,
# the tied embedding's copies summing their gradients.
on_gpus pp2 "$work/cpu_micro2" parallel.pp=2 train.micro_batches=2
resumed_on_cpu pp2 "$work/cpu_micro2" train.micro_batches=2
# Pipeline steps decided on the device too, in fp16 (the last stage's backward seeded with the
# loss scale the device decided), logged every 4th step: the losses at steps 4 and 8 against one
# CPU rank's fp16 run, and no more than one wait for the device on any rank between two records
# (metrics' host_waits: the verdicts' read at the logged step).
pp2_fp16=(parallel.pp=2 train.micro_batches=2 train.precision='"fp16"' train.checkpoint_every=0)
"$tessera" train "$work/job.toml" "${pp2_fp16[@]:1}" --out "$work/cpu_fp16" --no-plot \
  >"$work/cpu_fp16.log" 2>&1 || fail "one CPU rank, fp16: $(tail -5 "$work/cpu_fp16.log")"
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" train.device='"cuda"' "${pp2_fp16[@]}" \
  train.log_every=4 --out "$work/pp2_fp16" --no-plot >"$work/pp2_fp16.log" 2>&1 ||
  fail "pp2 fp16 on 2 emulated GPUs: $(tail -5 "$work/pp2_fp16.log")"
jq -c 'select(.step == 4 or .step == 8) | {step, loss}' "$work/cpu_fp16/metrics.jsonl" \
  >"$work/cpu_fp16_4_8.jsonl"
mkdir -p "$work/cpu_fp16_4_8" && mv "$work/cpu_fp16_4_8.jsonl" "$work/cpu_fp16_4_8/metrics.jsonl"
[[ $(losses "$work/pp2_fp16" | wc -l) -eq 2 ]] || fail "pp2 fp16: expected records at steps 4 and 8"
expect_close "2 emulated GPUs, pp2 fp16 (steps 4 and 8) vs 1 CPU rank" "$work/pp2_fp16" \
  "$work/cpu_fp16_4_8"
waits=$(jq -r 'select(.step == 8) | .host_waits' "$work/pp2_fp16/metrics.jsonl")
[[ $waits == 1 ]] || fail "pp2 fp16: steps 5-8 waited for the device $waits times on some rank (bound 1)"
echo "ok: pp2 fp16 on 2 emulated GPUs: steps 5-8 waited for the device $waits time(s) on the rank that waited most"
# Context parallelism: each chunk's queries over the whole sequence's keys and values (the
# window attention kernels), all-gathered and reduce-scattered by NCCL.
on_gpus cp2 "$work/cpu" parallel.cp=2

# A suspended rank of a GPU job (rank 0 waits inside an emulated NCCL collective) is named too.
suspend_rank_1 gpu_suspended 2 train.steps=1000000 train.device='"cuda"'
# A GPU rank alive but stuck outside communication (TESSERA_FAULT_STALL: rank 1's training
# thread sleeps after step 3, its heartbeats on time): rank 0, whose NCCL collectives never
# complete, waits in the step's control-plane exchange over MPI, and names rank 1 within
# parallel.stuck_timeout_s = 3 s plus 10 s of the stall's start.
stalled="$work/stalled"
mkdir -p "$stalled"
TESSERA_FAULT_STALL=1:3:120 timeout 120 "${mpi[@]}" -x TESSERA_FAULT_STALL -np 2 "$tessera" train \
  "$work/job.toml" train.device='"cuda"' train.steps=1000 parallel.stuck_timeout_s=3 \
  --out "$stalled/run" --no-plot >"$stalled.log" 2>&1 &
job=$!
wait_for_text "$stalled.log" "TESSERA_FAULT_STALL: rank 1 stalls" ||
  fail "a stalled rank: rank 1 never stalled: $(tail -3 "$stalled.log")"
stall_ms=$(now_ms)
wait "$job" && fail "a stalled rank: the job exited 0: $(tail -3 "$stalled.log")"
elapsed_ms=$(($(now_ms) - stall_ms))
grep -aq "tessera: rank 0: rank 1 is alive (its heartbeats arrive) but has started no communication" \
  "$stalled.log" || fail "a stalled rank was not named: $(tail -5 "$stalled.log")"
((elapsed_ms < 13000)) || fail "a stalled rank was named $elapsed_ms ms after it stalled (bound 3 s + 10 s)"
echo "ok: a GPU rank stuck outside communication was named $elapsed_ms ms after it stalled:" \
  "$(grep -ao "rank 1 is alive.*" "$stalled.log" | head -1)"
echo "ok: emulated 2-rank training"
