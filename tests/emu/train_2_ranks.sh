#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `tessera train train.device=cuda` on 2 ranks of the emulated CUDA device (mpirun, emulated
# NCCL): data parallel with ZeRO stages 0-3, tensor (with sequence), pipeline and context
# parallel, each against the same job on one CPU rank. The
# GPU path sums in other orders (cuBLASLt's reference GEMM, f64 block reductions, a reduction
# tree over ranks), so losses are compared to a relative bound (the one tests/cuda uses for
# the first steps, 1e-4), not bit for bit. Also: a checkpoint of the 2-rank GPU run resumes
# on one CPU rank, and a rank suspended by SIGSTOP is named by the other.
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

"$tessera" train "$work/job.toml" --out "$work/cpu" --no-plot >"$work/cpu.log" 2>&1 ||
  fail "one CPU rank: $(tail -5 "$work/cpu.log")"
[[ $(losses "$work/cpu" | wc -l) -eq 8 ]] || fail "one CPU rank: expected 8 logged steps"

for stage in 0 1 2 3; do
  out="$work/gpu_zero$stage"
  start=$(date +%s)
  "${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" train.device='"cuda"' \
    parallel.zero_stage=$stage --out "$out" --no-plot >"$out.log" 2>&1 ||
    fail "2 ranks on the emulated device, ZeRO $stage: $(tail -5 "$out.log")"
  grep -q "nccl" "$out.log" || fail "ZeRO $stage: the log does not mention NCCL: $(head -5 "$out.log")"
  err=$(max_rel_diff "$out" "$work/cpu")
  awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
    fail "ZeRO $stage: losses differ from one CPU rank by $err relative (bound 1e-4)"
  echo "[cmp] 2 emulated GPUs, ZeRO $stage vs 1 CPU rank: losses | f32 | $err | 1.0e-04 | PASS" \
    "($(($(date +%s) - start)) s)"
done

# Tensor (and sequence) parallelism over the 2 emulated GPUs: the layers' all-gathers and
# reduce-scatters run on emulated NCCL too, and its step-4 checkpoint (saved whole) resumes on
# one CPU rank.
out="$work/gpu_tp2"
start=$(date +%s)
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" train.device='"cuda"' parallel.tp=2 \
  parallel.sequence_parallel=1 \
  --out "$out" --no-plot >"$out.log" 2>&1 ||
  fail "2 ranks on the emulated device, tp 2: $(tail -5 "$out.log")"
err=$(max_rel_diff "$out" "$work/cpu")
awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
  fail "tp 2: losses differ from one CPU rank by $err relative (bound 1e-4)"
echo "[cmp] 2 emulated GPUs, tensor parallel vs 1 CPU rank: losses | f32 | $err | 1.0e-04 |" \
  "PASS ($(($(date +%s) - start)) s)"
"$tessera" train "$work/job.toml" --out "$out" --no-plot \
  --resume "$out/checkpoints/step_00000004" >"$work/resume_tp.log" 2>&1 ||
  fail "resume of the tensor-parallel GPU checkpoint on the CPU: $(tail -5 "$work/resume_tp.log")"
err=$(max_rel_diff "$out" "$work/cpu")
awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
  fail "tp 2 GPU -> CPU resume: losses differ from the CPU run by $err relative"
echo "[cmp] 2 emulated GPUs tp 2 -> 1 CPU rank resume: losses | f32 | $err | 1.0e-04 | PASS"

# Pipeline parallelism over the 2 emulated GPUs: activations and their gradients move by
# emulated NCCL's send/recv between the stages, the tied embedding's copies sum their gradients,
# and the step-4 checkpoint (saved whole) resumes on one CPU rank.
out="$work/gpu_pp2"
start=$(date +%s)
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" train.device='"cuda"' parallel.pp=2 \
  train.micro_batches=2 --out "$out" --no-plot >"$out.log" 2>&1 ||
  fail "2 ranks on the emulated device, pp 2: $(tail -5 "$out.log")"
"$tessera" train "$work/job.toml" train.micro_batches=2 --out "$work/cpu_micro2" --no-plot \
  >"$work/cpu_micro2.log" 2>&1 || fail "one CPU rank, 2 micro-batches: $(tail -5 "$work/cpu_micro2.log")"
err=$(max_rel_diff "$out" "$work/cpu_micro2")
awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
  fail "pp 2: losses differ from one CPU rank by $err relative (bound 1e-4)"
echo "[cmp] 2 emulated GPUs, pipeline parallel vs 1 CPU rank: losses | f32 | $err | 1.0e-04 |" \
  "PASS ($(($(date +%s) - start)) s)"
"$tessera" train "$work/job.toml" train.micro_batches=2 --out "$out" --no-plot \
  --resume "$out/checkpoints/step_00000004" >"$work/resume_pp.log" 2>&1 ||
  fail "resume of the pipelined GPU checkpoint on the CPU: $(tail -5 "$work/resume_pp.log")"
err=$(max_rel_diff "$out" "$work/cpu_micro2")
awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
  fail "pp 2 GPU -> CPU resume: losses differ from the CPU run by $err relative"
echo "[cmp] 2 emulated GPUs pp 2 -> 1 CPU rank resume: losses | f32 | $err | 1.0e-04 | PASS"

# Context parallelism over the 2 emulated GPUs: each chunk's queries over the whole sequence's
# keys and values (the window attention kernels), all-gathered and reduce-scattered by NCCL.
out="$work/gpu_cp2"
start=$(date +%s)
"${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" train.device='"cuda"' parallel.cp=2 \
  --out "$out" --no-plot >"$out.log" 2>&1 ||
  fail "2 ranks on the emulated device, cp 2: $(tail -5 "$out.log")"
err=$(max_rel_diff "$out" "$work/cpu")
awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
  fail "cp 2: losses differ from one CPU rank by $err relative (bound 1e-4)"
echo "[cmp] 2 emulated GPUs, context parallel vs 1 CPU rank: losses | f32 | $err | 1.0e-04 |" \
  "PASS ($(($(date +%s) - start)) s)"

# The 2-rank GPU run's step-4 checkpoint, resumed on one CPU rank, ends where the CPU run ends.
"$tessera" train "$work/job.toml" --out "$work/gpu_zero1" --no-plot \
  --resume "$work/gpu_zero1/checkpoints/step_00000004" >"$work/resume.log" 2>&1 ||
  fail "resume of the GPU checkpoint on the CPU: $(tail -5 "$work/resume.log")"
err=$(max_rel_diff "$work/gpu_zero1" "$work/cpu")
awk -v e="$err" 'BEGIN {exit !(e <= 1e-4)}' ||
  fail "GPU -> CPU resume: losses differ from the CPU run by $err relative"
echo "[cmp] 2 emulated GPUs -> 1 CPU rank resume: losses | f32 | $err | 1.0e-04 | PASS"
# A suspended rank of a GPU job (rank 0 waits inside an emulated NCCL collective) is named too.
suspend_rank_1 gpu_suspended 2 train.steps=1000000 train.device='"cuda"'
echo "ok: emulated 2-rank training"
