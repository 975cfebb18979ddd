# shellcheck shell=bash
# A private one-node Slurm cluster for tests (sourced, not run): its own munge daemon and key,
# slurmctld and slurmd on free ports, every file under DIR, nothing installed or changed outside
# it. Needs the Debian packages slurmctld, slurmd, slurm-client and munge, and root (slurmd runs
# jobs as the submitting user and must be able to switch to it).
#   start_local_slurm DIR   starts it, exports SLURM_CONF; fails if it does not come up in 30 s
#   stop_local_slurm DIR    stops it (the sourcing script calls it on exit)

# A TCP port nobody listens on now, from the range above the usual ephemeral ones' start.
local_slurm_free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
      echo "$p"
      return
    }
  done
  return 1
}

start_local_slurm() {
  local dir=$1 host cpus mem
  mkdir -p "$dir"/{state,spool,log}
  host=$(hostname)
  cpus=$(nproc --all)
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
  head -c 1024 /dev/urandom >"$dir/munge.key"
  chmod 400 "$dir/munge.key"
  /usr/sbin/munged --force --socket="$dir/munge.sock" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munged.seed" || return 1
  cat >"$dir/slurm.conf" <<CONF
ClusterName=tessera-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$(local_slurm_free_port)
SlurmdPort=$(local_slurm_free_port)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  export SLURM_CONF=$dir/slurm.conf
  /usr/sbin/slurmctld -f "$SLURM_CONF" || return 1
  /usr/sbin/slurmd -f "$SLURM_CONF" || return 1
  for _ in $(seq 1 300); do
    sinfo -h -o '%T' 2>/dev/null | grep -q '^idle' && return 0
    sleep 0.1
  done
  echo "local Slurm did not come up: $(tail -3 "$dir/log/slurmctld.log" "$dir/log/slurmd.log")"
  return 1
}

stop_local_slurm() {
  local dir=$1 f
  for f in slurmd slurmctld munged; do
    [[ -s $dir/$f.pid ]] && kill "$(cat "$dir/$f.pid")" 2>/dev/null
  done
  sleep 0.5
  for f in slurmd slurmctld munged; do
    [[ -s $dir/$f.pid ]] && kill -9 "$(cat "$dir/$f.pid")" 2>/dev/null
  done
  return 0
}
