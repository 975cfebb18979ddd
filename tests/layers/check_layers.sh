#!/usr/bin/env bash
# The layer rule of docs/ARCHITECTURE.md ("each folder depends only on the ones above it in this
# table"), checked on every `#include "folder/..."` in src/. Both the table and the list of known
# exceptions are read from the document itself, so the document and the check cannot drift
# apart: a new upward include fails here until it is removed or listed, with its reason, under
# "Layer exceptions". Usage: check_layers.sh [REPO_ROOT]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
doc=$root/docs/ARCHITECTURE.md

# Level of each folder: its row in the "Layers" table (folders on one row share a level).
declare -A level
row=0
while IFS= read -r line; do
  row=$((row + 1))
  first=${line#| }
  first=${first%%|*}
  for f in $(grep -oE '`src/[a-z_/]+/`' <<<"$first" | tr -d '`'); do
    f=${f#src/}
    level[${f%/}]=$row
  done
done < <(sed -n '/^## Layers/,/^## /p' "$doc" | grep -E '^\| `src/')
[[ ${#level[@]} -gt 5 ]] || { echo "check_layers: no layer table found in $doc" >&2; exit 2; }

# Exceptions: "- `src/FILE` includes `HEADER`: why" lines under "### Layer exceptions".
declare -A allowed
while IFS= read -r line; do
  file=$(grep -oE '^- `src/[^`]+`' <<<"$line" | sed 's/^- `src\///; s/`$//') || continue
  inc=$(grep -oE 'includes `[^`]+`' <<<"$line" | sed 's/includes `//; s/`$//') || continue
  allowed["$file -> $inc"]=1
done < <(sed -n '/^### Layer exceptions/,/^##/p' "$doc")

# The folder (a key of `level`) that holds a path relative to src/: the longest prefix listed.
folder_of() {
  local p=$1 best=""
  for f in "${!level[@]}"; do
    if [[ $p == "$f"/* && ${#f} -gt ${#best} ]]; then best=$f; fi
  done
  echo "$best"
}

bad=0 used=0
cd "$root/src"
while IFS=: read -r file _ inc; do
  inc=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"$inc")
  file=${file#./}
  from=$(folder_of "$file")
  to=$(folder_of "$inc")
  [[ -n $from && -n $to ]] || continue
  if ((level[$to] > level[$from])); then
    if [[ -n ${allowed["$file -> $inc"]:-} ]]; then
      used=$((used + 1))
      continue
    fi
    echo "src/$file includes \"$inc\": $to/ is below $from/ in docs/ARCHITECTURE.md's layer table"
    bad=$((bad + 1))
  fi
done < <(grep -rnE '^#include "[a-z_]+/' --include='*.h' --include='*.cpp' --include='*.cu' \
  --include='*.cuh' .)
echo "check_layers: ${#level[@]} folders, $used listed exceptions, $bad violations"
((bad == 0))
