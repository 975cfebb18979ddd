#!/usr/bin/env bash
# Collective bandwidth on this machine, Tessera's MPI backend beside its peers, under mpirun:
# Tessera as it runs (its ring from MpiOptions::ring_min_bytes on, MPI's own collectives below),
# Tessera with the ring off (Open MPI's non-blocking collectives alone, progressed by the same
# thread), and PyTorch's torch.distributed over gloo (bench/peers/torch_collectives.py; skipped
# when bench/peers/setup_torch.sh has not run). One table per collective: the median time of one
# call and Tessera's speed-up over each peer.
#   bench/collectives.sh [RANKS] [MAX_BYTES]   (defaults 2 and 268435456; about 2 min for 2 ranks;
#   BENCH=path/to/bench_collectives, default build-cpu/bench_collectives)
# Shared memory without cross-memory attach (CMA), as in containers; run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}
max=${2:-268435456}
B=${BENCH:-./build-cpu/bench_collectives}
py=bench/peers/.venv/bin/python
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
launch=(mpirun --oversubscribe -np "$ranks")
out=$(mktemp -d /tmp/tessera_collectives.XXXXXX)
trap 'rm -rf "$out"' EXIT
"${launch[@]}" "$B" --max-bytes "$max" | grep '^RESULT' >"$out/tessera"
"${launch[@]}" "$B" --max-bytes "$max" --ring-min-bytes 1099511627776 | grep '^RESULT' >"$out/mpi"
if [[ -x $py ]]; then
  "${launch[@]}" "$py" bench/peers/torch_collectives.py --max-bytes "$max" | grep '^RESULT' >"$out/torch"
else
  echo "(no bench/peers/.venv: run bench/peers/setup_torch.sh for the PyTorch column)"
  : >"$out/torch"
fi
# field FILE OP BYTES: the median seconds of that line, or "" when absent.
field() { awk -v op="op=$2" -v b="bytes=$3" '$3 == op && $5 == b { sub("seconds=", "", $6); print $6 }' "$1"; }
ms() { [[ -n $1 ]] && awk -v s="$1" 'BEGIN { printf "%.3f", s * 1e3 }' || printf "n/a"; }
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", b / a }' || printf "n/a"; }
echo "$ranks ranks; $(lscpu | sed -n "s/^Model name: *//p"), $(nproc --all) CPUs"
for op in all_reduce reduce_scatter all_gather; do
  echo
  echo "$op | Tessera ms | Tessera, ring off ms | torch gloo ms | vs ring off | vs gloo"
  echo "---|---|---|---|---|---"
  awk -v op="op=$op" '$3 == op { sub("bytes=", "", $5); print $5 }' "$out/tessera" | while read -r bytes; do
    t=$(field "$out/tessera" "$op" "$bytes")
    m=$(field "$out/mpi" "$op" "$bytes")
    g=$(field "$out/torch" "$op" "$bytes")
    echo "$bytes | $(ms "$t") | $(ms "$m") | $(ms "$g") | $(ratio "$t" "$m") | $(ratio "$t" "$g")"
  done
done
