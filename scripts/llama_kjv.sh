#!/usr/bin/env bash
# A small Llama-style model on the King James Bible with its own BPE vocabulary, in one command
# after the quick start:
#   1. holds out the Bible's last 5% of bytes for validation (the byte-level GPT's split, so the
#      two are compared on the same text);
#   2. trains a 4096-token byte-level BPE vocabulary on the rest (tessera tokenizer train);
#   3. tokenizes both parts into shards (tessera prepare; re-runs do nothing);
#   4. trains configs/llama_kjv.toml on them into runs/llama_kjv.
# Extra arguments go to `tessera train` (e.g. train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare-data.sh >/dev/null
[[ -x build/tessera ]] || bash scripts/build.sh tessera_cli
d=data/kjv_bpe
mkdir -p "$d"
if [[ ! -s $d/val.txt ]]; then
  bytes=$(wc -c <data/kjv.txt)
  train_bytes=$((bytes - bytes / 20))
  head -c "$train_bytes" data/kjv.txt >"$d/train.txt"
  tail -c +"$((train_bytes + 1))" data/kjv.txt >"$d/val.txt"
fi
[[ -s $d/tokenizer.json ]] ||
  ./build/tessera tokenizer train --vocab-size 4096 --pattern llama3 --special '<|endoftext|>' \
    --out "$d/tokenizer.json" "$d/train.txt"
./build/tessera prepare --tokenizer "$d/tokenizer.json" --out "$d/shards" --name train \
  --val-tokens 0 "$d/train.txt"
./build/tessera prepare --tokenizer "$d/tokenizer.json" --out "$d/shards" --name val \
  --val-tokens 0 "$d/val.txt"
./build/tessera train configs/llama_kjv.toml "$@"
