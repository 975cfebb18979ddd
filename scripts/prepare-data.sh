#!/usr/bin/env bash
# Writes the default text corpus, the King James Bible, as plain text from Debian's bible-kjv
# package (its `bible` program), to data/kjv.txt. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
out=data/kjv.txt
if [[ -s $out ]]; then
  echo "prepare-data: $out present ($(wc -c <"$out") bytes)"
  exit 0
fi
command -v bible >/dev/null || { echo "prepare-data: 'bible' not found: run scripts/install-deps.sh" >&2; exit 1; }
mkdir -p data
# Fixed line width so the corpus is byte-identical on every machine.
bible -l80 gen1:1-rev22:21 >"$out.tmp"
mv "$out.tmp" "$out"
echo "prepare-data: wrote $out ($(wc -c <"$out") bytes)"
