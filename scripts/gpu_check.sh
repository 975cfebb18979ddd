#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: configure a CUDA build, build the CUDA backend
# and its tests, compare every CUDA kernel with the CPU backend on fresh random inputs (a
# pass/fail table per op and dtype), and end with a short summary table. Budget: 8 minutes on
# one H200 (16 cores) - the build takes most of it.
#
#   scripts/gpu_check.sh                 # build in build-gpu/, report in build-gpu/gpu_check.md
#   BUILD_DIR=/tmp/b scripts/gpu_check.sh
#   CUDA_ARCH=90 scripts/gpu_check.sh    # default: the GPU's own compute capability
#
# Last step: a short GPT-2 124M bf16 training run on the GPU (bench_train_step --device cuda):
# tokens/s, MFU and the device allocator's peak memory in the summary table.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu}
REPORT=${REPORT:-$BUILD_DIR/gpu_check.md}
JOBS=${JOBS:-$(nproc)}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}  # seconds per test binary
START=$(date +%s)

step() { printf '\n==== %s ====\n' "$*"; }
die() {
  printf '\ngpu_check: FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed at line $LINENO: $BASH_COMMAND"' ERR

step "GPU"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi || die "nvidia-smi failed: the driver cannot see a GPU"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
[[ -n "$GPU_CC" ]] || die "could not read the GPU's compute capability from nvidia-smi"
CUDA_ARCH=${CUDA_ARCH:-$GPU_CC}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x "$NVCC" ]] || die "nvcc not found (put /usr/local/cuda/bin on PATH or set NVCC)"
"$NVCC" --version | tail -2

step "configure ($BUILD_DIR, CUDA architectures $CUDA_ARCH)"
mkdir -p "$BUILD_DIR"
# Only the GPU's own architecture: half the device compile time of the default "80-real;90".
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DTESSERA_BUILD_BENCH=OFF -DTESSERA_BUILD_TESTS=ON >"$BUILD_DIR/gpu_check.configure.log" 2>&1 ||
  { tail -30 "$BUILD_DIR/gpu_check.configure.log"; die "cmake configure failed (log: $BUILD_DIR/gpu_check.configure.log)"; }
grep -q "CUDA backend: nvcc" "$BUILD_DIR/gpu_check.configure.log" ||
  die "the CUDA backend was not enabled (see $BUILD_DIR/gpu_check.configure.log)"

step "build (ninja -j$JOBS)"
TESTS=(test_cuda_shared test_cuda_runtime test_cuda_kernels test_cuda_kernels_nn test_cuda_optim
  test_nccl_comm test_cuda_gpt)
BUILD_START=$(date +%s)
ninja -C "$BUILD_DIR" -j"$JOBS" tessera_cuda "${TESTS[@]}" bench_train_step >"$BUILD_DIR/gpu_check.build.log" 2>&1 ||
  { grep -E "error|FAILED" "$BUILD_DIR/gpu_check.build.log" | head -30
    die "build failed (log: $BUILD_DIR/gpu_check.build.log)"; }
BUILD_SECONDS=$(($(date +%s) - BUILD_START))
echo "built in ${BUILD_SECONDS}s"

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

step "GPT-2 124M bf16 training timing"
# Model, data and AdamW on the GPU, bf16 autocast; 2 warm-up + 5 timed steps of 8 x 1024 tokens
# (halved until it fits). MFU against PEAK_TFLOPS when set (the GPU's dense bf16 peak), else
# against a cuBLASLt bf16 GEMM measured in-process. Budget: TRAIN_TIMEOUT seconds per attempt.
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
    MODEL_STATUS="batch $TRAIN_BATCH x 1024: $(field tokens_per_s) tokens/s, $(field ms_per_step) ms/step, MFU $(awk -v m="$(field mfu)" 'BEGIN{printf "%.1f%%", 100*m}'), peak memory $(field peak_mib) MiB"
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
