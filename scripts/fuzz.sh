#!/usr/bin/env bash
# Builds the libFuzzer parser targets with clang (build-fuzz/, -DTESSERA_FUZZ=ON) and runs each
# for a bounded time over a copy of its seed corpus (the repository's fuzz/corpus is never
# written). Fails when any target finds a crash, a sanitizer report, a timeout or an
# out-of-memory input; the reproducer is kept in $FUZZ_OUT (default build-fuzz/fuzz-out/).
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS (default 20) each
#   scripts/fuzz.sh safetensors     # one target
#   FUZZ_SECONDS=600 scripts/fuzz.sh idx
#   FUZZ_SEED=0 scripts/fuzz.sh     # a fresh random seed (default 1: CI explores the same way
#                                   # every run, so a red run means a change, not luck)
#
# docs/FUZZING.md: what each target covers and how to work with a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${FUZZ_BUILD:-$ROOT/build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-20}
OUT=${FUZZ_OUT:-$BUILD/fuzz-out}
SEED=${FUZZ_SEED:-1}
CXX_CLANG=${FUZZ_CXX:-clang++}

command -v "$CXX_CLANG" >/dev/null || {
  echo "fuzz.sh: $CXX_CLANG not found (scripts/install-deps.sh installs clang)" >&2
  exit 1
}
start=$(date +%s)
if [[ ! -f $BUILD/build.ninja ]]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_CLANG" -DTESSERA_FUZZ=ON \
    -DTESSERA_WERROR=ON -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_BENCH=OFF \
    -DTESSERA_WITH_MPI=OFF -DTESSERA_CUDA=OFF >/dev/null
fi
ninja -C "$BUILD" fuzz_all
built=$(date +%s)

if (($#)); then
  targets=("$@")
else
  targets=()
  for src in "$ROOT"/fuzz/fuzz_*.cpp; do
    name=$(basename "$src" .cpp)
    targets+=("${name#fuzz_}")
  done
fi

mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
  bin=$BUILD/fuzz_$t
  [[ -x $bin ]] || { echo "fuzz.sh: no target $bin" >&2; exit 1; }
  mkdir -p "$work/$t"
  [[ -d $ROOT/fuzz/corpus/$t ]] && cp -r "$ROOT/fuzz/corpus/$t/." "$work/$t/"
  args=(-seed="$SEED" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10
        -print_final_stats=1 -artifact_prefix="$OUT/$t-")
  [[ -f $ROOT/fuzz/$t.dict ]] && args+=(-dict="$ROOT/fuzz/$t.dict")
  echo "== fuzz_$t: ${SECONDS_EACH}s"
  log=$OUT/$t.log
  # One OpenMP thread: the kernels the import runs gain nothing from more on tiny inputs.
  if OMP_NUM_THREADS=1 "$bin" "${args[@]}" "$work/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    summary+=("fuzz_$t: ${runs:-?} executions")
  else
    failed+=("$t")
    summary+=("fuzz_$t: FAILED (log $log)")
    grep -E -A40 "ERROR|runtime error|fuzz property|fuzz: exception|Timeout|out-of-memory" \
      "$log" | head -60 || tail -40 "$log"
  fi
done
end=$(date +%s)

echo "== fuzzing summary (build $((built - start))s, fuzzing $((end - built))s)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes in: ${failed[*]}; reproducers: $OUT/<target>-crash-*" \
       "(run: $BUILD/fuzz_<target> <file>)" >&2
  exit 1
fi
