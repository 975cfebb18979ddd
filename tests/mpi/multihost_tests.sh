#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Training across two "hosts" on one machine: two network namespaces joined by a veth pair, each
# with its own hostname, so that Open MPI sees two nodes and its ranks can only reach each other
# by TCP over the veth, as two machines over a network would:
#   - mpirun runs inside the first namespace as host A and starts the second node's daemon
#     (orted) through a launch agent (plm_rsh_agent) that stands in for ssh: it enters host B's
#     namespace with a hostname of its own;
#   - only the TCP BTL (and self) is allowed, bound to the veth's subnet, for MPI's messages and
#     Open MPI's own control channel (oob) alike;
#   - a tiny GPT trains on 2 ranks, one per host, data parallel (ZeRO-1) and tensor parallel
#     (tp 2), and each run's losses must equal the same job on one rank to 1e-5 relative;
#   - each rank writes where it ran (hostname, namespace), and the veth's byte counters must
#     rise by at least the bytes the run had to exchange (the gradients; the tensor-parallel
#     payload), so a run that talked over some other path fails.
# Needs root (CAP_NET_ADMIN for the namespaces and the veth, CAP_SYS_ADMIN for `ip netns exec`
# and `unshare --uts`) and iproute2; without them it skips (exit status 77) saying which.
# Usage: multihost_tests.sh TESSERA_BINARY MPIRUN
set -euo pipefail
# shellcheck source=job_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/job_setup.sh" multihost "$@"
script_start_ms=$(now_ms)

skip() {
  echo "SKIP: $*"
  exit 77
}

# Unique per run; the hostnames live in each namespace's own UTS namespace and the addresses
# only on the veth inside the two namespaces, so neither can clash with the machine's own.
ns_a=tessera_mh_a_$$ ns_b=tessera_mh_b_$$
host_a=tessera-host-a host_b=tessera-host-b
addr_a=10.213.0.1 addr_b=10.213.0.2 subnet=10.213.0.0/24

cleanup() {
  local ns pid
  for ns in "$ns_a" "$ns_b"; do
    [[ -e /run/netns/$ns ]] || continue
    # Whatever a failed run left inside (its daemons, ranks) was started by this script: only
    # its processes live in these namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    # Deleting the namespace deletes its end of the veth, and with it the pair.
    ip netns del "$ns" || echo "warning: could not delete network namespace $ns"
  done
  rm -rf "$work"
}
trap cleanup EXIT
# A signal would otherwise end the script without the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

# Why it cannot run, in the terms of what is missing.
command -v ip >/dev/null ||
  skip "no 'ip' command (Debian package iproute2) to create network namespaces and a veth pair"
command -v unshare >/dev/null ||
  skip "no 'unshare' command (util-linux) to give each namespace its own hostname"
cap_eff=$((16#$(awk '/^CapEff:/ {print $2}' /proc/self/status)))
(((cap_eff >> 12) & 1)) ||
  skip "no CAP_NET_ADMIN (uid $(id -u)): network namespaces and veth pairs need it" \
    "(root, or a container started with --cap-add NET_ADMIN)"
(((cap_eff >> 21) & 1)) ||
  skip "no CAP_SYS_ADMIN (uid $(id -u)): 'ip netns exec' and 'unshare --uts' need it" \
    "(root, or a container started with --cap-add SYS_ADMIN)"

# Namespaces of runs killed before their EXIT trap (a CTest timeout sends SIGKILL), named by a
# process that no longer exists.
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^tessera_mh_[ab]_[0-9]+$/ {print $1}'); do
  kill -0 "${ns##*_}" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
done

err=$(ip netns add "$ns_a" 2>&1) ||
  skip "cannot create a network namespace although CAP_NET_ADMIN is held: ip netns add: $err"
ip netns add "$ns_b"
err=$(ip netns exec "$ns_a" unshare --uts hostname "$host_a" 2>&1) ||
  skip "cannot enter a network namespace with a hostname of its own: $err"

# The two hosts' link: a veth pair created with one end in each namespace.
ip -n "$ns_a" link add veth_a type veth peer name veth_b netns "$ns_b"
ip -n "$ns_a" addr add "$addr_a/24" dev veth_a
ip -n "$ns_b" addr add "$addr_b/24" dev veth_b
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set veth_a up
ip -n "$ns_b" link set veth_b up

# on_host HOST COMMAND...: runs COMMAND inside HOST's namespace, with HOST as its hostname.
printf '%s %s\n' "$host_a" "$ns_a" "$host_b" "$ns_b" >"$work/hosts.ns"
on_host() {
  local ns
  ns=$(awk -v h="$1" '$1 == h {print $2}' "$work/hosts.ns")
  # shellcheck disable=SC2016 # $1 and $@ belong to the inner shell
  ip netns exec "$ns" unshare --uts /bin/sh -c 'hostname "$1" && shift && exec "$@"' sh "$@"
}
# Open MPI's launch agent in place of ssh. It is called as `agent.sh HOST ARGS...`, ARGS being
# the remote command line (PATH settings, then orted and its options) that ssh would hand to the
# remote shell as one string; it runs them the same way, inside HOST's namespace as HOST.
cat >"$work/agent.sh" <<'AGENT'
#!/usr/bin/env bash
set -euo pipefail
dir=$(dirname "$0")
host=$1
shift
ns=$(awk -v h="$host" '$1 == h {print $2}' "$dir/hosts.ns")
[[ -n $ns ]] || {
  echo "agent.sh: unknown host '$host' (known: $(awk '{print $1}' "$dir/hosts.ns" | xargs))" >&2
  exit 1
}
echo "$host" >>"$dir/agent.log"
# shellcheck disable=SC2016 # $1 and $2 belong to the inner shell
exec ip netns exec "$ns" unshare --uts /bin/sh -c 'hostname "$1" && eval "$2"' sh "$host" "$*"
AGENT
chmod +x "$work/agent.sh"
printf '%s slots=1\n' "$host_a" "$host_b" >"$work/hostfile"

# veth_count bytes|packets: both directions of the link, what leaves veth_a plus what arrives.
veth_count() {
  ip -n "$ns_a" -s -j link show veth_a | jq --arg f "$1" '.[0].stats64 | .rx[$f] + .tx[$f]'
}

steps=20
write_tiny_job "$work/job.toml" optim.warmup_steps=2 train.steps=$steps train.batch_size=8

# The reference: the same job on one rank, outside the namespaces.
"$tessera" train "$work/job.toml" --out "$work/one" --no-plot >"$work/one.log" 2>&1 ||
  fail "one rank: $(tail -5 "$work/one.log")"
params=$(sed -n 's/.*training gpt (\([0-9]*\) parameters).*/\1/p' "$work/one.log")
[[ -n $params ]] || fail "one rank: no parameter count in its log: $(head -3 "$work/one.log")"
losses_of() { jq -r '.loss' "$1/metrics.jsonl"; }
[[ $(losses_of "$work/one" | wc -l) -eq $steps ]] || fail "one rank: expected $steps logged steps"

# The largest relative difference between two runs' losses, step by step.
max_rel_diff() {
  paste <(losses_of "$1") <(losses_of "$2") |
    awk '{d = $1 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r}
         END {printf "%.3e", m}'
}

# two_hosts NAME WHAT MESH MIN_BYTES [TRAIN OVERRIDES...]: trains the job on 2 ranks, rank 0 on
# host A, rank 1 on host B, and checks where they ran, that the log shows the mesh MESH, the
# losses against one rank's and that the veth carried at least the bytes that the function
# MIN_BYTES prints, given the run's folder.
two_hosts() {
  local name=$1 what=$2 mesh=$3 min_bytes_fn=$4
  shift 4
  local dir="$work/$name" log="$work/$name.log" before_b before_p start_ms wall_ms rc=0
  mkdir -p "$dir"
  before_b=$(veth_count bytes)
  before_p=$(veth_count packets)
  start_ms=$(now_ms)
  # shellcheck disable=SC2016 # $0, $1 and $@ belong to the rank's wrapper shell
  on_host "$host_a" timeout 60 "${mpi[@]}" -np 2 --hostfile "$work/hostfile" --map-by node \
    --mca plm rsh --mca plm_rsh_agent "$work/agent.sh" \
    --mca btl tcp,self --mca btl_tcp_if_include "$subnet" --mca oob_tcp_if_include "$subnet" \
    bash -c 'echo "$(hostname) $(ip netns identify)" >"$0/where.$OMPI_COMM_WORLD_RANK"; exec "$@"' \
    "$dir" "$tessera" train "$work/job.toml" "$@" --out "$dir/run" --no-plot >"$log" 2>&1 || rc=$?
  wall_ms=$(($(now_ms) - start_ms))
  ((rc == 0)) || fail "$what on 2 hosts: exit status $rc: $(tail -5 "$log")"
  local bytes=$(($(veth_count bytes) - before_b)) packets=$(($(veth_count packets) - before_p))

  [[ $(cat "$dir/where.0") == "$host_a $ns_a" && $(cat "$dir/where.1") == "$host_b $ns_b" ]] ||
    fail "$what: ranks ran on '$(cat "$dir/where.0")' and '$(cat "$dir/where.1")'," \
      "not '$host_a $ns_a' and '$host_b $ns_b'"
  grep -qx "$host_b" "$work/agent.log" ||
    fail "$what: mpirun did not start host B through the agent"
  grep -q "2 ranks = $mesh " "$log" ||
    fail "$what: the log does not show the mesh '$mesh': $(head -3 "$log")"

  [[ $(losses_of "$dir/run" | wc -l) -eq $steps ]] || fail "$what: expected $steps logged steps"
  local diff
  diff=$(max_rel_diff "$dir/run" "$work/one")
  awk -v e="$diff" 'BEGIN {exit !(e <= 1e-5)}' ||
    fail "$what: losses differ from one rank's by $diff relative (bound 1e-5)"

  local min_bytes
  min_bytes=$("$min_bytes_fn" "$dir/run")
  ((bytes >= min_bytes)) ||
    fail "$what: the veth carried $bytes bytes, fewer than the $min_bytes the run had to exchange"
  echo "[figure] 2 hosts (network namespaces, TCP over a veth), $what vs 1 rank: max relative" \
    "loss difference $diff over $steps steps (bound 1e-5)"
  awk -v w="$what" -v b="$bytes" -v p="$packets" -v m="$min_bytes" -v t="$wall_ms" 'BEGIN {
    printf "[figure] 2 hosts, %s: %d bytes in %d packets over the veth, %.2fx the %d bytes it had",
           w, b, p, b / m, m
    printf " to exchange; wall time %.2f s (mpirun start-up included)\n", t / 1000 }' 
}

# Data parallel: each step the 2 ranks reduce-scatter the f32 gradients (each sends the other
# its half) and all-gather the updated parameters (each sends its half), so at least twice the
# gradient bytes must cross (as for a plain all-reduce: each rank needs the other's N values).
twice_gradient_bytes() { echo $((2 * params * 4 * steps)); }
two_hosts dp_zero1 "data parallel (ZeRO-1)" "pp 1 x dp 2 x cp 1 x tp 1" twice_gradient_bytes \
  parallel.zero_stage=1
# Tensor parallel: the layers' collectives, whose payload rank 0 logs per step as tp_bytes; for
# 2 ranks an all-reduce of P bytes moves at least 2P over the link, an all-gather or a
# reduce-scatter P, so at least the sum of tp_bytes must cross.
tp_payload_bytes() { jq -s 'map(.tp_bytes) | add' "$1/metrics.jsonl"; }
two_hosts tp2 "tensor parallel (tp 2)" "pp 1 x dp 1 x cp 1 x tp 2" tp_payload_bytes parallel.tp=2

echo "[figure] multihost test wall time: $(awk -v t="$(($(now_ms) - script_start_ms))" \
  'BEGIN {printf "%.1f", t / 1000}') s (namespaces, one-rank reference, 2 two-host runs)"
echo "ok: training over TCP between two network namespaces equals one rank"
