#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `tessera train train.device=cuda` on 2 ranks of the emulated CUDA device started WITHOUT
# mpirun, torchrun-style (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT,
# TESSERA_JOB_TOKEN): the NCCL unique id and the start-up checks go through rank 0's TCP store.
# With ZeRO 0 and 3 the losses must equal, bit for bit, those of the same job under mpirun (the
# same NCCL collectives; only the bootstrap differs). Then the failures: a rank that never starts is named
# by the other within the store timeout (parallel.timeout_s = 3), a rank with another job token
# is refused, CPU ranks are told to use MPI, and a job without a token is told how to set one.
# And liveness without MPI (store heartbeats): a rank suspended by SIGSTOP, rank 1 and then rank 0
# (which hosts the store), is named by the other within parallel.timeout_s = 3 s plus 10 s; a
# rank stuck outside communication, within parallel.stuck_timeout_s = 3 s plus 10 s.
# Usage: train_torchrun_2_ranks.sh TESSERA_BINARY MPIRUN
set -uo pipefail
# shellcheck source=../mpi/job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/../mpi/job_setup.sh" emu_torchrun "$@"
write_tiny_job "$work/job.toml" optim.warmup_steps=2 train.steps=6 train.batch_size=8

losses() { jq -r '.loss' "$1/metrics.jsonl"; }
token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# A port in the ephemeral-free range, different per run of this script.
port=$((20000 + RANDOM % 20000))

# torchrun_rank RANK WORLD OUT [ARGS...]: one rank, as torchrun would start it, with $token as
# the job token (none when empty) and $port as MASTER_PORT; its log is OUT.log, its pid OUT.pid.
torchrun_rank() {
  local rank=$1 world=$2 out=$3
  shift 3
  local secret=(TESSERA_JOB_TOKEN="$token")
  [[ -n $token ]] || secret=(-u TESSERA_JOB_TOKEN)
  env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u TESSERA_JOB_TOKEN_FILE "${secret[@]}" \
    RANK="$rank" WORLD_SIZE="$world" LOCAL_RANK="$rank" MASTER_ADDR=127.0.0.1 \
    MASTER_PORT="$port" bash -c 'echo $$ >"$0"; exec "$@"' "$out.pid" \
    "$tessera" train "$work/job.toml" --out "$out" --no-plot "$@" >"$out.log" 2>&1
}

# ZeRO 0 (DDP) and 3 (sharded weights, the most collectives): the same job under mpirun and
# torchrun-style.
for stage in 0 3; do
  "${mpi[@]}" -np 2 "$tessera" train "$work/job.toml" train.device='"cuda"' \
    parallel.zero_stage=$stage --out "$work/mpi$stage" --no-plot >"$work/mpi$stage.log" 2>&1 ||
    fail "2 ranks under mpirun, ZeRO $stage: $(tail -5 "$work/mpi$stage.log")"
  start=$(date +%s)
  port=$((port + 1))
  torchrun_rank 0 2 "$work/tr$stage" train.device='"cuda"' parallel.zero_stage=$stage &
  pid0=$!
  torchrun_rank 1 2 "$work/tr$stage.1" train.device='"cuda"' parallel.zero_stage=$stage &
  pid1=$!
  wait "$pid0" || fail "torchrun-style rank 0, ZeRO $stage: $(tail -5 "$work/tr$stage.log")"
  wait "$pid1" || fail "torchrun-style rank 1, ZeRO $stage: $(tail -5 "$work/tr$stage.1.log")"
  grep -q "id over store" "$work/tr$stage.log" ||
    fail "rank 0's log does not say the NCCL id went over the store: $(head -8 "$work/tr$stage.log")"
  [[ $(losses "$work/tr$stage" | wc -l) -eq 6 ]] || fail "torchrun-style: expected 6 logged steps"
  diff <(losses "$work/mpi$stage") <(losses "$work/tr$stage") >/dev/null ||
    fail "ZeRO $stage: torchrun-style losses differ from mpirun's:" \
      "$(paste <(losses "$work/mpi$stage") <(losses "$work/tr$stage"))"
  echo "[cmp] 2 emulated GPUs, ZeRO $stage, torchrun-style (store) vs mpirun: 6 losses | f32 |" \
    "0 | 0 (bit-identical) | PASS ($(($(date +%s) - start)) s)"
done

# Rank 1 never starts: rank 0 names it within the 3 s timeout (plus start-up).
port=$((port + 1))
start_ms=$(now_ms)
torchrun_rank 0 2 "$work/alone" train.device='"cuda"' && fail "rank 0 alone exited 0"
elapsed_ms=$(($(now_ms) - start_ms))
grep -q "rank 0's store at 127.0.0.1:$port: rank 1 of 2 never arrived within 3 s" "$work/alone.log" ||
  fail "rank 0 alone did not name rank 1: $(tail -3 "$work/alone.log")"
((elapsed_ms < 13000)) || fail "rank 0 alone took $elapsed_ms ms to fail (timeout 3 s)"
echo "ok: rank 1 never started: rank 0 exited non-zero after $elapsed_ms ms: $(grep -o "rank 0's store.*" "$work/alone.log" | head -1)"

# Rank 1 with another token: refused; rank 0 names it as never arrived.
port=$((port + 1))
torchrun_rank 0 2 "$work/tok0" train.device='"cuda"' &
pid0=$!
token=not-this-jobs-token-at-all-000000 torchrun_rank 1 2 "$work/tok1" \
  train.device='"cuda"' && fail "a rank with another token exited 0"
wait "$pid0" && fail "rank 0 exited 0 although rank 1 was refused"
grep -q "refused this rank's handshake" "$work/tok1.log" ||
  fail "the rank with another token was not told it was refused: $(tail -3 "$work/tok1.log")"
grep -q "wrong job token" "$work/tok0.log" || fail "rank 0 did not log the refusal: $(tail -3 "$work/tok0.log")"
grep -q "rank 1 of 2 never arrived" "$work/tok0.log" || fail "rank 0 did not name rank 1: $(tail -3 "$work/tok0.log")"
echo "ok: a rank with another job token was refused and named by rank 0"

# CPU ranks: told to use MPI. No token: told how to set one.
torchrun_rank 0 2 "$work/cpu" && fail "a torchrun-style CPU rank exited 0"
grep -q "CPU ranks need MPI" "$work/cpu.log" || fail "CPU ranks: $(tail -3 "$work/cpu.log")"
token='' torchrun_rank 0 2 "$work/notoken" train.device='"cuda"' &&
  fail "a job without a token exited 0"
grep -q "openssl rand -hex 32" "$work/notoken.log" || fail "no token: $(tail -3 "$work/notoken.log")"
# suspend_torchrun STOPPED: two ranks training torchrun-style; once training is under way, rank
# STOPPED is suspended (SIGSTOP: alive, silent, its sockets open) and the other rank must exit
# naming it within the 3 s timeout plus 10 s. Prints the time it took.
suspend_torchrun() {
  local stopped=$1 other=$((1 - $1)) dir="$work/stop$1" start_ms elapsed_ms alive=1 pid0 pid1
  port=$((port + 1))
  torchrun_rank 0 2 "$dir.0" train.device='"cuda"' train.steps=1000000 &
  pid0=$!
  torchrun_rank 1 2 "$dir.1" train.device='"cuda"' train.steps=1000000 &
  pid1=$!
  for _ in $(seq 1 600); do
    [[ -s "$dir.0/metrics.jsonl" && -s "$dir.0.pid" && -s "$dir.1.pid" ]] && break
    sleep 0.1
  done
  [[ -s "$dir.0/metrics.jsonl" ]] || fail "suspend rank $stopped: training did not start: $(tail -3 "$dir.0.log")"
  kill -STOP "$(cat "$dir.$stopped.pid")"
  start_ms=$(now_ms)
  for _ in $(seq 1 300); do
    kill -0 "$(cat "$dir.$other.pid")" 2>/dev/null || {
      alive=0
      break
    }
    sleep 0.1
  done
  elapsed_ms=$(($(now_ms) - start_ms))
  kill -CONT "$(cat "$dir.$stopped.pid")" 2>/dev/null
  kill -9 "$(cat "$dir.0.pid")" "$(cat "$dir.1.pid")" 2>/dev/null
  wait "$pid0" "$pid1"
  ((alive == 0)) || fail "rank $other was still running $elapsed_ms ms after rank $stopped was suspended"
  grep -aq "tessera: rank $other: rank $stopped stopped responding" "$dir.$other.log" ||
    fail "rank $other did not name the suspended rank $stopped: $(tail -3 "$dir.$other.log")"
  ((elapsed_ms < 13000)) ||
    fail "rank $other took $elapsed_ms ms to exit (timeout_s = 3, bound 3 s + 10 s)"
  echo "ok: torchrun-style, rank $stopped suspended (SIGSTOP): rank $other exited after $elapsed_ms ms: $(grep -ao "rank $stopped stopped responding.*" "$dir.$other.log" | head -1)"
}
suspend_torchrun 1
suspend_torchrun 0

# Rank 1 alive but stuck outside communication (TESSERA_FAULT_STALL: its training thread sleeps
# after step 3, its heartbeats on time): rank 0 waits for it in the step's host exchange over
# the store and names it after parallel.stuck_timeout_s = 3 s (bound: plus 10 s).
port=$((port + 1))
torchrun_rank 0 2 "$work/stall.0" train.device='"cuda"' train.steps=1000 \
  parallel.stuck_timeout_s=3 &
pid0=$!
TESSERA_FAULT_STALL=1:3:120 torchrun_rank 1 2 "$work/stall.1" train.device='"cuda"' \
  train.steps=1000 parallel.stuck_timeout_s=3 &
pid1=$!
wait_for_text "$work/stall.1.log" "TESSERA_FAULT_STALL: rank 1 stalls" ||
  fail "rank 1 never stalled: $(tail -3 "$work/stall.1.log")"
stall_ms=$(now_ms)
wait "$pid0" && fail "rank 0 exited 0 beside a stalled rank 1"
elapsed_ms=$(($(now_ms) - stall_ms))
kill -9 "$(cat "$work/stall.1.pid")" 2>/dev/null
wait "$pid1" 2>/dev/null
grep -aq "rank 1 of 2 did not reach all_gather_bytes #[0-9]* within 3 s (rank 0 waited), connected and beating" \
  "$work/stall.0.log" || fail "rank 0 did not name the stalled rank 1: $(tail -3 "$work/stall.0.log")"
((elapsed_ms < 13000)) || fail "rank 0 named the stalled rank 1 after $elapsed_ms ms (bound 3 s + 10 s)"
echo "ok: torchrun-style, rank 1 stuck outside communication: rank 0 named it after $elapsed_ms ms:" \
  "$(grep -ao "rank 1 of 2 did not reach.*" "$work/stall.0.log" | head -1)"
echo "ok: torchrun-style launch on the emulated device"
