#!/usr/bin/env bash
# Overlap benchmark for docs/PERF.md (section Distributed): a 4-layer, 256-wide byte-level GPT on
# the KJV text, global batch 8 x 128 tokens, 2 MiB gradient buckets, trained for 50 steps on
# RANKS ranks (default 2) with THREADS OpenMP threads each, once per ZeRO stage, then on one
# process with THREADS and with RANKS x THREADS threads for comparison. Prints each run's throughput and the
# share of communication hidden behind computation (rank 0, steps 2-50); the traces are in
# runs/bench_dist_z*/trace_rank*.json.
# Usage: scripts/bench-distributed.sh [RANKS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}
threads=${2:-1}
bin=${TESSERA:-build/tessera}
job=(configs/gpt_kjv.toml model.n_layer=4 model.n_embd=256 model.n_head=4 train.seq_len=128
     train.batch_size=8 train.steps=50 optim.warmup_steps=5 train.eval_every=0
     train.eval_batches=1 train.sample_every=0 parallel.bucket_mb=2 --no-plot)
mpi=(mpirun -np "$ranks" --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
for z in 0 1 2 3; do
  echo "== ZeRO stage $z, $ranks ranks x $threads threads"
  OMP_NUM_THREADS=$threads "${mpi[@]}" "$bin" train "${job[@]}" train.threads="$threads" \
    parallel.zero_stage=$z --out runs/bench_dist_z$z 2>&1 | tr '\r' '\n' |
    grep -a "tessera: done\|tessera: communication" | sed 's/; traces.*//'
done
for t in "$threads" $((ranks * threads)); do
  echo "== 1 process x $t threads"
  OMP_NUM_THREADS=$t "$bin" train "${job[@]}" train.threads="$t" --out runs/bench_dist_single \
    2>&1 | tr '\r' '\n' | grep -a "tessera: done"
done
