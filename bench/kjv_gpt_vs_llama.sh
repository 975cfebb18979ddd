#!/usr/bin/env bash
# Bits per byte on the King James Bible's held-out last 5%: the byte-level GPT default
# (configs/gpt_kjv.toml) against the small Llama with a BPE vocabulary trained on the Bible
# (configs/llama_kjv.toml), at equal training time on this machine.
#   bench/kjv_gpt_vs_llama.sh [OUT_DIR]      (default runs/kjv_gpt_vs_llama; ~10 min on 2 cores)
# 1. trains the GPT as the quick start does and times it;
# 2. times 20 Llama steps, and trains the Llama for as many steps as fit the GPT's time;
# 3. evaluates both on the whole held-out text (the same bytes: scripts/llama_kjv.sh holds out
#    the GPT's split) and converts nats per token to bits per byte.
# Run it on an idle machine: the equal-time budget is measured, not assumed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/kjv_gpt_vs_llama}
T=./build/tessera
quiet=(train.sample_every=0 train.checkpoint_every=0 --no-plot)
mkdir -p "$out"
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }  # arithmetic in floating point (log = ln)
# The last logged step's ms_per_step in a run folder.
last_ms() { tail -n 1 "$1/metrics.jsonl" | sed -E 's/.*"ms_per_step":([0-9.e+-]+).*/\1/'; }

bash scripts/llama_kjv.sh train.steps=20 optim.warmup_steps=5 train.eval_every=0 \
  "${quiet[@]}" --out "$out/llama_probe" >"$out/llama_probe.log" 2>&1
t0=$(now)
$T train configs/gpt_kjv.toml "${quiet[@]}" --out "$out/gpt" >"$out/gpt.log" 2>&1
t1=$(now)
gpt_s=$(calc "$t1 - $t0")
llama_ms=$(last_ms "$out/llama_probe")
steps=$(printf '%.0f' "$(calc "$gpt_s * 1000 / $llama_ms * 0.97")")  # 3%: evals, start
$T train configs/llama_kjv.toml train.steps="$steps" "${quiet[@]}" --out "$out/llama" \
  >"$out/llama.log" 2>&1
t2=$(now)
llama_s=$(calc "$t2 - $t1")

gpt_nats=$($T eval configs/gpt_kjv.toml --weights "$out/gpt/model.safetensors" \
  train.eval_batches=1000000 | sed -E 's/.*"val_loss":([0-9.e+-]+).*/\1/')
llama_nats=$($T eval configs/llama_kjv.toml --weights "$out/llama/model.safetensors" \
  train.eval_batches=1000000 | sed -E 's/.*"val_loss":([0-9.e+-]+).*/\1/')
val_bytes=$(wc -c <data/kjv_bpe/val.txt)
val_tokens=$($T tokenizer encode --tokenizer data/kjv_bpe/tokenizer.json --count \
  data/kjv_bpe/val.txt 2>/dev/null)
gpt_bpb=$(calc "$gpt_nats / log(2)")
llama_bpb=$(calc "$llama_nats * $val_tokens / $val_bytes / log(2)")
cpu=$(lscpu | sed -nE 's/^Model name: +//p' | head -n 1)
printf 'machine: %s, %s cores\n' "$cpu" "$(nproc)"
printf 'gpt_kjv   (bytes, 1500 steps):    %6.1f s training, val %.4f nats/byte  = %.4f bits/byte\n' \
  "$gpt_s" "$gpt_nats" "$gpt_bpb"
printf 'llama_kjv (BPE 4096, %s steps): %6.1f s training, val %.4f nats/token = %.4f bits/byte (%s tokens / %s bytes)\n' \
  "$steps" "$llama_s" "$llama_nats" "$llama_bpb" "$val_tokens" "$val_bytes"
printf 'ratio llama / gpt bits per byte: %.3f\n' "$(calc "$llama_bpb / $gpt_bpb")"
