# shellcheck shell=bash disable=SC2034 # the variables set here are used by the sourcing script
# Shared set-up of the tests/mpi/*.sh scripts that drive the tessera command under mpirun:
# their arguments, a work folder removed on exit, fail(), a small corpus and a tiny GPT job.
# Sourced, not run:
#   source "$(dirname "${BASH_SOURCE[0]}")/job_setup.sh" NAME "$@"
# with the script's own arguments TESSERA_BINARY MPIRUN. Sets:
#   tessera       the tessera binary
#   mpi           mpirun with the options every test needs (an array)
#   work          a fresh folder /tmp/tessera_mpi_NAME.XXXXXX, removed when the script exits
#   with_pids     a rank wrapper (an array): "${with_pids[@]}" DIR COMMAND... writes the rank's
#                 pid to DIR/pid.RANK, then runs COMMAND in its place (so the pid is the rank's)
# and defines fail MESSAGE (prints FAIL: MESSAGE, exits 1), write_tiny_job, suspend_rank_1 and
# the helpers that watch a restarting run (below).
(($# == 3)) || {
  echo "usage: source job_setup.sh NAME TESSERA_BINARY MPIRUN (got $# arguments)"
  exit 2
}
tessera=$2
mpi=("$3" --oversubscribe --allow-run-as-root)
work=$(mktemp -d "/tmp/tessera_mpi_$1.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2016 # $$, $0 and $@ belong to the wrapper's own shell
with_pids=(bash -c 'echo $$ >"$0/pid.$OMPI_COMM_WORLD_RANK"; exec "$@"')

fail() {
  echo "FAIL: $*"
  exit 1
}

# write_tiny_job PATH [SECTION.KEY=VALUE...]: a 2-layer byte-level GPT on a 400-line corpus
# ($work/corpus.txt, written here), logging every step, one OpenMP thread per rank (several ranks
# share 2 cores), a 3 s heartbeat timeout. The keys that differ between tests (steps, batch
# size, warm-up, checkpoints, ZeRO stage, ...) are given as arguments and added to their
# section; VALUE is written as is (TOML: strings need their quotes).
write_tiny_job() {
  local path=$1 kv key i
  shift
  local -A extra=([model]="" [data]="" [optim]="" [train]="" [parallel]="")
  for kv in "$@"; do
    key=${kv%%=*}
    [[ $key == *.* && -v extra[${key%%.*}] ]] || fail "write_tiny_job: '$kv' is not SECTION.KEY=VALUE of a known section"
    extra[${key%%.*}]+="${key#*.} = ${kv#*=}"$'\n'
  done
  for i in $(seq 1 400); do
    echo "$i and god said let there be light and there was light and god saw the light"
  done >"$work/corpus.txt"
  cat >"$path" <<TOML
[model]
kind = "gpt"
n_layer = 2
n_head = 2
n_embd = 32
context = 16
${extra[model]}[data]
kind = "text"
path = "$work/corpus.txt"
${extra[data]}[optim]
${extra[optim]}[train]
seq_len = 16
eval_every = 0
log_every = 1
threads = 1
${extra[train]}[parallel]
timeout_s = 3
${extra[parallel]}
TOML
}

# suspend_rank_1 NAME NP [TRAIN ARGUMENTS...]: trains $work/job.toml on NP ranks (with the extra
# arguments), suspends rank 1 with SIGSTOP once training is under way (alive but silent, as a
# rank stuck in the kernel or swapped out) and checks that every other rank exits naming it
# within the 3 s heartbeat timeout plus 10 s. mpirun would wait for the suspended rank forever,
# so this watches the other ranks' pids, then kills it. Prints the time it took.
suspend_rank_1() {
  local name=$1 np=$2 p alive=1 r
  shift 2
  local dir="$work/$name" log="$work/$name.log"
  mkdir -p "$dir"
  (
    exec timeout 120 "${mpi[@]}" --enable-recovery -np "$np" "${with_pids[@]}" "$dir" \
      "$tessera" train "$work/job.toml" "$@" --out "$dir/run" --no-plot >"$log" 2>&1
  ) &
  local job=$!
  for _ in $(seq 1 600); do
    [[ -s "$dir/run/metrics.jsonl" && $(find "$dir" -name 'pid.*' -size +0 | wc -l) -eq $np ]] && break
    sleep 0.1
  done
  [[ -s "$dir/run/metrics.jsonl" ]] || fail "$name: the $np-rank run did not start training: $(tail -5 "$log")"
  local stopped others=()
  stopped=$(cat "$dir/pid.1")
  for ((r = 0; r < np; ++r)); do ((r == 1)) || others+=("$(cat "$dir/pid.$r")"); done
  kill -STOP "$stopped"
  local start_ms=$(($(date +%s%N) / 1000000)) elapsed_ms
  for _ in $(seq 1 300); do
    alive=0
    for p in "${others[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
  kill -CONT "$stopped" 2>/dev/null
  kill -9 "$stopped" 2>/dev/null
  wait "$job"
  ((alive == 0)) || fail "$name: the other ranks were still running $elapsed_ms ms after rank 1 was suspended"
  grep -a "stopped responding" "$log"
  for ((r = 0; r < np; ++r)); do
    ((r == 1)) && continue
    grep -aq "tessera: rank $r: rank 1 stopped responding" "$log" ||
      fail "$name: rank $r did not report rank 1: $(tail -5 "$log")"
  done
  ((elapsed_ms < 13000)) ||
    fail "$name: the other ranks took $elapsed_ms ms to exit (timeout_s = 3, bound 3 s + 10 s)"
  echo "ok: $name: after rank 1 was suspended (SIGSTOP) the other ranks exited in $elapsed_ms ms naming it"
}

# losses RUN_DIR: each logged step's [step, loss].
losses() { jq -c '[.step, .loss]' "$1/metrics.jsonl"; }
# expect_same_as_reference RUN_DIR WHAT: every loss and the final weights of RUN_DIR equal the
# uninterrupted run's in $work/ref, bit for bit; fails naming WHAT otherwise.
expect_same_as_reference() {
  diff <(losses "$work/ref") <(losses "$1") >"$work/diff.txt" ||
    fail "$2: losses differ from the uninterrupted run: $(head -4 "$work/diff.txt")"
  cmp "$work/ref/model.safetensors" "$1/model.safetensors" ||
    fail "$2: final weights differ from the uninterrupted run"
}

# Watching a run that restarts (tessera supervise around mpirun, output appended to one log).
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# wait_for_text LOG TEXT: waits up to 60 s until LOG holds TEXT; status 1 if it never does.
wait_for_text() {
  for _ in $(seq 1 1200); do
    grep -aq "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# last_step RUN_DIR: the newest step in RUN_DIR/metrics.jsonl (0: none yet).
last_step() { tail -1 "$1/metrics.jsonl" 2>/dev/null | jq -r '.step' 2>/dev/null || echo 0; }
# newest_committed RUN_DIR: the step of the newest checkpoint whose manifest exists (0: none).
newest_committed() {
  local d best=0 s
  for d in "$1"/checkpoints/step_*/; do
    [[ -e $d/manifest.json ]] || continue
    s=$((10#$(basename "$d" | sed 's/step_//')))
    ((s > best)) && best=$s
  done
  echo "$best"
}
# wait_for_step RUN_DIR STEP PID WHAT: waits until RUN_DIR has logged STEP (or a later one);
# fails naming WHAT if process PID (the supervisor) ends first.
wait_for_step() {
  local s
  while :; do
    s=$(last_step "$1")
    ((${s:-0} >= $2)) && return 0
    kill -0 "$3" 2>/dev/null || fail "the job ended before $4: $(tail -5 "$1/run.log")"
    sleep 0.01
  done
}
# Each start of `tessera train` prints "tessera: training ..." after its resume message
# ("resuming from DIR/step_N", or none when there was no checkpoint and it starts afresh);
# progress lines ("step N/M | ...") end in a carriage return when mpirun gives the ranks a
# terminal, hence the record separator.
# starts LOG: how many times the job has started.
starts() { awk 'BEGIN { RS = "[\r\n]+" } /tessera: training / { n++ } END { print n + 0 }' "$1"; }
# started_and_stepped LOG N: whether the job's Nth start has printed a step.
started_and_stepped() {
  awk -v n="$2" 'BEGIN { RS = "[\r\n]+" } /tessera: training / { starts++ }
                 starts >= n && /step [0-9]+\/[0-9]+ \|/ { found = 1; exit } END { exit !found }' "$1"
}
# resumed_step LOG N: the step the job's Nth start resumed from (0: it started afresh).
resumed_step() {
  awk -v n="$2" 'BEGIN { RS = "[\r\n]+" }
                 /resuming from [^ ]*step_[0-9]+/ {
                   match($0, /step_[0-9]+/)
                   from = substr($0, RSTART + 5, RLENGTH - 5) + 0
                 }
                 /tessera: training / { if (++starts == n) { print from + 0; exit } from = 0 }' "$1"
}
# percentile P VALUES...: the nearest-rank percentile.
percentile() {
  local p=$1 sorted n i
  shift
  mapfile -t sorted < <(printf '%s\n' "$@" | sort -n)
  n=${#sorted[@]}
  i=$(((p * n + 99) / 100 - 1))
  ((i < 0)) && i=0
  echo "${sorted[$i]}"
}
