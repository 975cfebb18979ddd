#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: configure a CUDA build, build the CUDA backend
# and its tests, compare every CUDA kernel with the CPU backend on fresh random inputs (a
# pass/fail table per op and dtype), and end with a short summary table. Budget: 8 minutes on
# one H200 (16 cores) - the build takes most of it.
#
#   scripts/gpu_check.sh                 # build in build-gpu/, report in build-gpu/gpu_check.md
#   BUILD_DIR=/tmp/b scripts/gpu_check.sh
#   CUDA_ARCH=90 scripts/gpu_check.sh    # default: the GPU's own compute capability
#   GPU_CHECK_DRY_RUN=1 CUDA_ARCH=90 scripts/gpu_check.sh   # no GPU: configure + build only
#
# On a machine without Debian's build dependencies (the device tool's CUDA image, which reaches
# no package registry): run scripts/gpu_deps.sh first where the registry is reachable, carry
# .gpu-deps/ along, and this script builds against those libraries (device tool: carry
# [".gpu-deps"], command `bash scripts/gpu_check.sh`). NCCL comes from the image's pip package
# nvidia-nccl-cu13 (or TESSERA_NCCL_ROOT); MPI is off when there is no mpicxx.
#
# Then `tessera train` itself on the GPU (the KJV config's model on this repository's docs as
# text, bf16 and fp16), and last a short GPT-2 124M bf16 training run on the GPU
# (bench_train_step --device cuda): tokens/s, MFU and the device allocator's peak memory in the
# summary table.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=$(realpath -m "${BUILD_DIR:-$ROOT/build-gpu}")
REPORT=${REPORT:-$BUILD_DIR/gpu_check.md}
JOBS=${JOBS:-$(nproc)}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}  # seconds per test binary
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}    # 1: no GPU needed; stop after the build (to try it without one)
START=$(date +%s)

step() { printf '\n==== %s ====\n' "$*"; }
die() {
  printf '\ngpu_check: FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed at line $LINENO: $BASH_COMMAND"' ERR

step "GPU"
if [[ "$DRY_RUN" == 1 ]]; then
  echo "dry run (GPU_CHECK_DRY_RUN=1): no GPU looked for; configure and build only"
  GPU_NAME="(dry run)"
  GPU_CC=${CUDA_ARCH:-90}
else
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine"
  nvidia-smi || die "nvidia-smi failed: the driver cannot see a GPU"
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  [[ -n "$GPU_CC" ]] || die "could not read the GPU's compute capability from nvidia-smi"
fi
CUDA_ARCH=${CUDA_ARCH:-$GPU_CC}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x "$NVCC" ]] || die "nvcc not found (put /usr/local/cuda/bin on PATH or set NVCC)"
"$NVCC" --version | tail -2
command -v cmake >/dev/null || die "cmake not found"
command -v ninja >/dev/null || die "ninja not found"
echo "$(cmake --version | head -1), ninja $(ninja --version)"

# nvcc hands host code to g++, and the C++ sources are C++20: check before a long configure.
step "host C++ compiler"
mkdir -p "$BUILD_DIR"
CXX_BIN=${CXX:-$(command -v g++ || command -v c++ || true)}
[[ -n "$CXX_BIN" ]] && command -v "$CXX_BIN" >/dev/null ||
  die "no host C++ compiler: nvcc and the C++20 sources need g++ 11 or later (or set CXX)"
CXX_BIN=$(command -v "$CXX_BIN")
"$CXX_BIN" --version | head -1
printf '%s\n' '#include <bit>' '#include <concepts>' '#include <numbers>' '#include <span>' \
  '#include <stdexcept>' 'template <std::floating_point T> T half(T x) { return x / 2; }' \
  'struct P { int a; auto operator<=>(const P&) const = default; };' \
  'int main() { int v[2] = {1, 2}; std::span<const int> s(v);' \
  '  try { throw std::runtime_error("libstdc++ linked"); } catch (const std::exception&) {}' \
  '  return P{1} < P{2} && half(std::numbers::pi) > 1 && std::bit_cast<unsigned>(1.0f) && s.size() == 2 ? 0 : 1; }' |
  "$CXX_BIN" -std=c++20 -x c++ - -o "$BUILD_DIR/cxx20_probe" >"$BUILD_DIR/cxx20_probe.log" 2>&1 &&
  "$BUILD_DIR/cxx20_probe" ||
  { head -20 "$BUILD_DIR/cxx20_probe.log"
    die "$CXX_BIN cannot build and run C++20 (concepts, <span>, <=>, std::bit_cast, libstdc++): need g++ 11 or later"; }
echo "C++20: ok"

# What a CUDA/PyTorch image lacks (oneDNN, fmt, toml++, nlohmann-json, CLI11, GoogleTest,
# Google Benchmark, zlib's headers) comes as Debian 12 .deb files in .gpu-deps/ (made by
# scripts/gpu_deps.sh on a machine with Debian's registry, carried here): unpacked into
# $BUILD_DIR/deps, searched by CMake before the system, and on LD_LIBRARY_PATH for the runs.
step "libraries"
DEPS_ARGS=()
DEPS_PREFIX=""
if compgen -G "$ROOT/.gpu-deps/*.deb" >/dev/null; then
  bash scripts/gpu_deps.sh unpack "$BUILD_DIR/deps" | tee "$BUILD_DIR/gpu_check.deps.log"
  DEPS_PREFIX=$(sed -n 's/^prefix=//p' "$BUILD_DIR/gpu_check.deps.log")
  DEPS_LIBDIR=$(sed -n 's/^libdir=//p' "$BUILD_DIR/gpu_check.deps.log")
  [[ -d "$DEPS_PREFIX" && -d "$DEPS_LIBDIR" ]] || die "unpacking .gpu-deps/ gave no prefix"
  DEPS_ARGS=(-DCMAKE_PREFIX_PATH="$DEPS_PREFIX" -DCMAKE_LIBRARY_PATH="$DEPS_LIBDIR"
    -DCMAKE_INCLUDE_PATH="$DEPS_PREFIX/include")
  export LD_LIBRARY_PATH="$DEPS_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  echo "no .gpu-deps/*.deb: every library from the system (scripts/gpu_deps.sh makes the bundle)"
fi
# NCCL: the image's pip package nvidia-nccl-cu13 (site-packages/nvidia/nccl), found through
# python3; cmake/cuda.cmake searches TESSERA_NCCL_ROOT first, then next to the CUDA toolkit.
if [[ -z "${TESSERA_NCCL_ROOT:-}" ]] && command -v python3 >/dev/null; then
  TESSERA_NCCL_ROOT=$(python3 - <<'EOF' 2>/dev/null || true
import glob, os, sys
for base in filter(None, sys.path):
    for root in sorted(glob.glob(os.path.join(base, "nvidia", "*"))):
        if os.path.isfile(os.path.join(root, "include", "nccl.h")) and glob.glob(
                os.path.join(root, "lib", "libnccl.so*")):
            print(root)
            sys.exit(0)
EOF
  )
fi
NCCL_ARGS=()
if [[ -n "${TESSERA_NCCL_ROOT:-}" ]]; then
  echo "NCCL hint: TESSERA_NCCL_ROOT=$TESSERA_NCCL_ROOT"
  NCCL_ARGS=(-DTESSERA_NCCL_ROOT="$TESSERA_NCCL_ROOT")
else
  echo "NCCL hint: none (no pip nvidia-nccl package found by python3): next to the CUDA toolkit"
fi
# One GPU needs no MPI: without mpicxx (the image has none) build the single-process communicator.
MPI_ARGS=()
if ! command -v mpicxx >/dev/null; then
  echo "MPI: off (no mpicxx on PATH)"
  MPI_ARGS=(-DTESSERA_WITH_MPI=OFF)
fi

step "configure ($BUILD_DIR, CUDA architectures $CUDA_ARCH)"
# Only the GPU's own architecture: half the device compile time of the default "80-real;90".
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON \
  -DCMAKE_CXX_COMPILER="$CXX_BIN" -DCMAKE_CUDA_HOST_COMPILER="$CXX_BIN" \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  "${DEPS_ARGS[@]}" "${NCCL_ARGS[@]}" "${MPI_ARGS[@]}" \
  -DTESSERA_BUILD_BENCH=ON -DTESSERA_BUILD_TESTS=ON >"$BUILD_DIR/gpu_check.configure.log" 2>&1 ||
  { tail -30 "$BUILD_DIR/gpu_check.configure.log"; die "cmake configure failed (log: $BUILD_DIR/gpu_check.configure.log)"; }
grep -q "CUDA backend: nvcc" "$BUILD_DIR/gpu_check.configure.log" ||
  die "the CUDA backend was not enabled (see $BUILD_DIR/gpu_check.configure.log)"
# Where each library was found: the bundle ($BUILD_DIR/deps), pip (NCCL) or the system.
{
  for var in DNNL_LIBRARY DNNL_INCLUDE_DIR fmt_DIR tomlplusplus_DIR nlohmann_json_DIR CLI11_DIR \
    GTest_DIR benchmark_DIR ZLIB_LIBRARY_RELEASE ZLIB_INCLUDE_DIR TESSERA_NCCL_LIBRARY \
    TESSERA_NCCL_INCLUDE_DIR MPI_CXX_COMPILER; do
    path=$(sed -n "s/^$var:[A-Z]*=//p" "$BUILD_DIR/CMakeCache.txt" | head -1)
    if [[ -n "$DEPS_PREFIX" && "$path" == "$DEPS_PREFIX"* ]]; then from=bundle
    elif [[ -n "${TESSERA_NCCL_ROOT:-}" && "$path" == "$TESSERA_NCCL_ROOT"* ]]; then from=pip
    elif [[ -z "$path" || "$path" == *-NOTFOUND ]]; then from="-"
    else from=system; fi
    printf '%-26s %-7s %s\n' "$var" "$from" "$path"
  done
} | tee "$BUILD_DIR/gpu_check.libraries.txt"

step "build (ninja -j$JOBS)"
# Every tests/cuda/test_*.cpp (a new test file is picked up without editing this script).
mapfile -t TESTS < <(cd tests/cuda && ls test_*.cpp | sed 's/\.cpp$//')
BUILD_START=$(date +%s)
ninja -C "$BUILD_DIR" -j"$JOBS" tessera_cuda "${TESTS[@]}" tessera_cli bench_train_step >"$BUILD_DIR/gpu_check.build.log" 2>&1 ||
  { grep -E "error|FAILED" "$BUILD_DIR/gpu_check.build.log" | head -30
    die "build failed (log: $BUILD_DIR/gpu_check.build.log)"; }
BUILD_SECONDS=$(($(date +%s) - BUILD_START))
echo "built in ${BUILD_SECONDS}s"
# Every shared library of the programs found (the bundle's through LD_LIBRARY_PATH, NCCL through
# the build's RUNPATH) before anything runs: a missing one fails here with its name.
if command -v ldd >/dev/null; then
  for exe in "${TESTS[@]}" tessera bench_train_step; do
    if ldd "$BUILD_DIR/$exe" | grep 'not found'; then
      die "$exe: shared libraries not found (above; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
    fi
  done
  echo "shared libraries: all found ($(ldd "$BUILD_DIR/tessera" | grep -cE 'dnnl|fmt|toml|nccl|cublas') of" \
    "oneDNN, fmt, toml++, NCCL, cuBLAS(Lt) in tessera)"
fi
if [[ "$DRY_RUN" == 1 ]]; then
  trap - ERR
  echo "gpu_check: dry run done (configure and build; GPU_CHECK_DRY_RUN=1 runs nothing on a GPU)"
  exit 0
fi

step "CUDA vs CPU kernel comparisons"
LOG="$BUILD_DIR/gpu_check.tests.log"
: >"$LOG"
declare -A T_PASS T_FAIL T_SKIP
ANY_TEST_FAILED=0
for t in "${TESTS[@]}"; do
  echo "-- $t"
  set +e
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} timeout "$TEST_TIMEOUT" "$BUILD_DIR/$t" --gtest_color=no \
    >"$BUILD_DIR/$t.log" 2>&1
  rc=$?
  set -e
  cat "$BUILD_DIR/$t.log" >>"$LOG"
  T_PASS[$t]=$(grep -c '^\[       OK \]' "$BUILD_DIR/$t.log" || true)
  T_FAIL[$t]=$(grep -c '^\[  FAILED  \] .*(' "$BUILD_DIR/$t.log" || true)
  T_SKIP[$t]=$(grep -c '^\[  SKIPPED \] .*(' "$BUILD_DIR/$t.log" || true)
  if [[ $rc -eq 124 ]]; then
    echo "   TIMEOUT after ${TEST_TIMEOUT}s"
    ANY_TEST_FAILED=1
  elif [[ $rc -ne 0 ]]; then
    grep -E "Failure|error|Expected|Which is|seed" "$BUILD_DIR/$t.log" | head -20 || true
    ANY_TEST_FAILED=1
  fi
  echo "   passed ${T_PASS[$t]}, failed ${T_FAIL[$t]}, skipped ${T_SKIP[$t]} (exit $rc)"
  # On a GPU machine nothing may skip for want of a device.
  if grep -q "no CUDA device" "$BUILD_DIR/$t.log"; then
    grep -m1 "no CUDA device" "$BUILD_DIR/$t.log"
    die "$t skipped its tests: the CUDA runtime sees no device although nvidia-smi does"
  fi
done

# Per op and dtype, from the tests' "[cmp] op | dtype | error | bound | PASS|FAIL" lines.
CMP=$(grep '^\[cmp\] ' "$LOG" | sed 's/^\[cmp\] //' || true)
N_CMP=$(printf '%s\n' "$CMP" | grep -c '|' || true)
N_CMP_FAIL=$(printf '%s\n' "$CMP" | grep -c '| FAIL$' || true)
{
  echo "## CUDA vs CPU kernels ($GPU_NAME, $(date -u +%Y-%m-%d))"
  echo
  echo "| op | dtype | rel. error | bound | result |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "$CMP" | awk -F' \\| ' 'NF == 5 { printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }'
} >"$REPORT"
cat "$REPORT"

# The NCCL communicator on one rank per GPU (NCCL refuses two ranks on one GPU). test_nccl_comm
# ran above as one process (every collective, the grouped unequal-count path, stream ordering,
# the watchdog); here the same binary runs under mpirun, the unique id going over MPI.
step "NCCL communicator across GPUs"
N_GPUS=$(nvidia-smi -L | grep -c '^GPU' || true)
NCCL_LOG="$BUILD_DIR/test_nccl_comm.mpi.log"
NCCL_MULTI="not run: $N_GPUS GPU(s), needs 2 or more (one rank per GPU)"
if [[ $N_GPUS -ge 2 ]]; then
  MPIRUN=$(command -v mpirun || true)
  if [[ -z "$MPIRUN" ]]; then
    NCCL_MULTI="not run: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
  else
    set +e
    OMP_NUM_THREADS=1 OMPI_MCA_btl_vader_single_copy_mechanism=none timeout "$TEST_TIMEOUT" \
      "$MPIRUN" --allow-run-as-root --oversubscribe -np "$N_GPUS" "$BUILD_DIR/test_nccl_comm" \
      --gtest_color=no >"$NCCL_LOG" 2>&1
    rc=$?
    set -e
    n_ok=$(grep -c '^\[       OK \]' "$NCCL_LOG" || true)
    n_fail=$(grep -c '^\[  FAILED  \] .*(' "$NCCL_LOG" || true)
    n_skip=$(grep -c '^\[  SKIPPED \] .*(' "$NCCL_LOG" || true)
    NCCL_MULTI="$N_GPUS ranks: $n_ok passed, $n_fail failed, $n_skip skipped (exit $rc)"
    if [[ $rc -ne 0 ]]; then
      grep -E "Failure|error|Expected|Which is|rank [0-9]+:" "$NCCL_LOG" | head -20 || true
      ANY_TEST_FAILED=1
    fi
  fi
fi
echo "$NCCL_MULTI"
NCCL_SINGLE="1 rank: ${T_PASS[test_nccl_comm]} passed, ${T_FAIL[test_nccl_comm]} failed, ${T_SKIP[test_nccl_comm]} skipped"

step "tessera train on the GPU (CLI)"
# The default job's model (configs/gpt_kjv.toml) for 300 steps on text from this repository
# (no download, no data package needed), in bf16 and fp16 with dynamic loss scaling: the whole
# trainer (batches from pinned memory, evaluation, sampling, a checkpoint, the final weights)
# on the device. Budget: CLI_TIMEOUT seconds per run.
CLI_TIMEOUT=${CLI_TIMEOUT:-120}
CORPUS="$BUILD_DIR/gpu_check_corpus.txt"
cat README.md docs/*.md src/*/*.h >"$CORPUS"
CLI_STATUS=""
# run_train LABEL LOG COMMAND...: runs one training under CLI_TIMEOUT and adds its summary line
# (or its failure) to CLI_STATUS.
run_train() {
  local label=$1 log=$2 rc done_line
  shift 2
  set +e
  timeout "$CLI_TIMEOUT" "$@" >"$log" 2>&1
  rc=$?
  set -e
  tail -4 "$log"
  done_line=$(grep -m1 '^tessera: done:' "$log" | sed 's/^tessera: done: //' || true)
  if [[ $rc -ne 0 || -z "$done_line" ]]; then
    CLI_STATUS+="$label: FAILED (exit $rc, log $log); "
    ANY_TEST_FAILED=1
  else
    CLI_STATUS+="$label: $done_line; "
  fi
}
JOB=(train configs/gpt_kjv.toml --no-plot data.path="$CORPUS" train.device=cuda train.steps=300
  train.eval_every=150)
for PREC in bf16 fp16; do
  run_train "$PREC" "$BUILD_DIR/gpu_check.train_$PREC.log" "$BUILD_DIR/tessera" "${JOB[@]}" \
    --out "$BUILD_DIR/run_$PREC" train.precision="$PREC" train.sample_every=300 \
    train.sample_tokens=64 train.checkpoint_every=150
done
# With two or more GPUs: the same job data-parallel over NCCL, one rank per GPU, ZeRO stage 1.
if [[ $N_GPUS -ge 2 && -n "${MPIRUN:-}" ]]; then
  OMP_NUM_THREADS=2 run_train "$N_GPUS GPUs (NCCL, ZeRO-1) bf16" "$BUILD_DIR/gpu_check.train_mpi.log" \
    "$MPIRUN" --allow-run-as-root --oversubscribe -np "$N_GPUS" "$BUILD_DIR/tessera" "${JOB[@]}" \
    --out "$BUILD_DIR/run_mpi" train.precision=bf16 parallel.zero_stage=1
fi
echo "$CLI_STATUS"

step "GPT-2 124M bf16 training timing"
# Model, data and AdamW on the GPU, bf16 autocast; 2 warm-up + 5 timed steps of 8 x 1024 tokens
# (halved until it fits). MFU against the GPU's dense bf16 datasheet peak (src/core/device_peak.h;
# PEAK_TFLOPS overrides it, and gives one to a GPU the table lacks), and beside it the share of a
# cuBLASLt bf16 GEMM measured in-process (the GEMM ceiling). Budget: TRAIN_TIMEOUT s per attempt.
TRAIN_LOG="$BUILD_DIR/bench_train_step.log"
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-150}
MODEL_STATUS="not run"
PEAK_ARGS=()
[[ -n "${PEAK_TFLOPS:-}" ]] && PEAK_ARGS=(--peak-tflops "$PEAK_TFLOPS")
for TRAIN_BATCH in 8 4 2; do
  set +e
  timeout "$TRAIN_TIMEOUT" "$BUILD_DIR/bench_train_step" --device cuda --model gpt2-124m \
    --batch "$TRAIN_BATCH" --seq 1024 --precision bf16 --warmup 2 --steps 5 "${PEAK_ARGS[@]}" \
    >"$TRAIN_LOG" 2>&1
  rc=$?
  set -e
  tail -12 "$TRAIN_LOG"
  if [[ $rc -eq 0 ]]; then
    R=$(grep '^RESULT ' "$TRAIN_LOG" | tail -1)
    field() { printf '%s\n' "$R" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    MFU_TEXT=$(awk -v m="$(field mfu)" -v p="$(field mfu_peak_gflops)" -v c="$(field of_gemm_ceiling)" \
      'BEGIN{ if (p > 0) printf "MFU %.1f%% of %.4g TFLOP/s", 100*m, p/1000; else printf "no MFU (unknown GPU: set PEAK_TFLOPS)"; printf ", %.1f%% of the GEMM ceiling", 100*c }')
    MODEL_STATUS="batch $TRAIN_BATCH x 1024: $(field tokens_per_s) tokens/s, $(field ms_per_step) ms/step, $MFU_TEXT, peak memory $(field peak_mib) MiB"
    break
  fi
  if grep -qi "out of memory" "$TRAIN_LOG"; then
    MODEL_STATUS="out of memory at batch $TRAIN_BATCH"
    continue
  fi
  MODEL_STATUS="FAILED (exit $rc, log $TRAIN_LOG)"
  ANY_TEST_FAILED=1
  break
done
echo "$MODEL_STATUS"

ELAPSED=$(($(date +%s) - START))
TOTAL_PASS=0 TOTAL_FAIL=0 TOTAL_SKIP=0
for t in "${TESTS[@]}"; do
  TOTAL_PASS=$((TOTAL_PASS + T_PASS[$t])) TOTAL_FAIL=$((TOTAL_FAIL + T_FAIL[$t]))
  TOTAL_SKIP=$((TOTAL_SKIP + T_SKIP[$t]))
done
{
  echo
  echo "## Summary"
  echo
  echo "| item | result |"
  echo "|---|---|"
  echo "| GPU | $GPU_NAME (sm_$GPU_CC) |"
  echo "| build (tessera + CUDA backend + tests, -j$JOBS) | ${BUILD_SECONDS}s |"
  echo "| CUDA tests | $TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped |"
  echo "| kernel comparisons | $((N_CMP - N_CMP_FAIL)) of $N_CMP within bounds |"
  echo "| NCCL communicator | $NCCL_SINGLE; $NCCL_MULTI |"
  echo "| \`tessera train\` on the GPU (300 steps) | $CLI_STATUS |"
  echo "| GPT-2 124M bf16 training | $MODEL_STATUS |"
  echo "| wall time | ${ELAPSED}s |"
} | tee -a "$REPORT"
echo
echo "report: $REPORT   logs: $BUILD_DIR/test_cuda_*.log $BUILD_DIR/test_nccl_comm*.log"

trap - ERR
if [[ $ANY_TEST_FAILED -ne 0 || $N_CMP_FAIL -ne 0 ]]; then
  die "$TOTAL_FAIL test(s) failed, $N_CMP_FAIL comparison(s) out of bounds (details above)"
fi
[[ $N_CMP -gt 0 ]] || die "no comparisons were reported: did the kernel tests run?"
echo "gpu_check: OK"
