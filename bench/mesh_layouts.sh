#!/usr/bin/env bash
# Memory and communication of GPT-2 124M and 350M per mesh layout on 4 CPU ranks (mpirun
# --oversubscribe): for each layout, rank 0's peak tensor memory (the allocator's peak: weights,
# gradients, optimizer state and activations) against one rank's, the bytes rank 0 moved per
# step on the tensor-parallel axis and the pipeline axis (from metrics.jsonl) against their
# analytic counts, and the pipeline's measured transfer share against the 1F1B bubble
# (p-1)/(m+p-1). Byte-level KJV text, batch 8 x 256 tokens in 4 micro-batches, 2 steps, f32.
#   bench/mesh_layouts.sh [OUT_DIR]   (default runs/mesh_layouts; ~15 min on 2 cores;
#   TESSERA=path/to/tessera to use another build than build/)
# Timings on an oversubscribed 2-core machine say little; memory and bytes are exact.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/mesh_layouts}
T=${TESSERA:-./build/tessera}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# configs/gpt2_124m.toml sets no shape key, so model.preset picks the size; its data, batch
# and precision are replaced.
common=(data.kind='"text"' data.path='"data/kjv.txt"' data.val_path='""' train.precision='"f32"'
  parallel.zero_stage=0 train.batch_size=8 train.micro_batches=4 train.seq_len=256
  train.steps=2 optim.warmup_steps=1 train.eval_batches=1 train.sample_every=0
  train.checkpoint_every=0 train.log_every=1 train.threads=1 --no-plot)

# run NAME RANKS PRESET [KEY=VALUE...]: trains and prints one table row.
run() {
  local name=$1 ranks=$2 preset=$3
  shift 3
  local dir="$out/${preset}_$name"
  local launcher=()
  ((ranks > 1)) && launcher=(mpirun --oversubscribe -np "$ranks")
  "${launcher[@]}" "$T" train configs/gpt2_124m.toml model.preset="$preset" "${common[@]}" "$@" \
    --out "$dir" >"$dir.log" 2>&1 || {
    echo "FAIL $preset $name: $(tail -3 "$dir.log")"
    return
  }
  local peak tp pp share
  peak=$(grep -o 'peak tensor memory [0-9.]* MiB' "$dir.log" | grep -o '[0-9.]*' | tail -1)
  tp=$(tail -n 1 "$dir/metrics.jsonl" | jq -r '.tp_bytes // "-"')
  pp=$(tail -n 1 "$dir/metrics.jsonl" | jq -r '.pp_bytes // "-"')
  share=$(tail -n 1 "$dir/metrics.jsonl" | jq -r '.pipeline_transfer_fraction // "-"')
  printf '| %s | %s | %d | %s | %s | %s | %s |\n' "$preset" "$name" "$ranks" "$peak" "$tp" "$pp" \
    "$share"
}

echo "| model | layout | ranks | rank 0 peak MiB | tp bytes/step | pp bytes/step | pp transfer share |"
echo "|---|---|---|---|---|---|---|"
p=gpt2-124m
run "1 rank" 1 $p
run "tp 2" 2 $p parallel.tp=2
run "tp 4" 4 $p parallel.tp=4
run "tp 4, sequence parallel" 4 $p parallel.tp=4 parallel.sequence_parallel=1
run "pp 2" 2 $p parallel.pp=2
run "pp 4" 4 $p parallel.pp=4
run "tp 2 x pp 2" 4 $p parallel.tp=2 parallel.pp=2
run "cp 4" 4 $p parallel.cp=4
run "dp 4, ZeRO-3, 2 micro-batches" 4 $p parallel.zero_stage=3 train.micro_batches=2
p=gpt2-350m  # 16 heads: tp up to 16
run "1 rank" 1 $p
run "tp 4" 4 $p parallel.tp=4
run "pp 4" 4 $p parallel.pp=4
run "tp 2 x pp 2" 4 $p parallel.tp=2 parallel.pp=2
