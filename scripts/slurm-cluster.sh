#!/bin/bash
# A 3-node Slurm cluster on this one machine, for the Slurm engine's tests and for trying the engine on a laptop.
#
#   scripts/slurm-cluster.sh up     # start it (idempotent); prints the `export SLURM_CONF=...` line to use
#   scripts/slurm-cluster.sh down   # stop what `up` started (by pid file) and remove its folder
#   scripts/slurm-cluster.sh status # sinfo of the cluster
#
# Everything lives under $SLURM_CLUSTER_DIR (default /tmp/kubetrain-slurm): its own slurm.conf, munge key
# and socket, state, spool, logs and pid files; nothing in /etc or /run is touched.  Three slurmd "nodes"
# (node1..node3) run on this host (`slurmd -N nodeX`, NodeHostname=localhost, one port each), behind one
# slurmctld, so placement, node loss and retries can be tested for real.
#
# Node features are Slurm's plain words; kubetrain reads a feature `key=value` as the label key=value (and
# a feature without `=` as a label with an empty value), so `--selector gpu-type=a100` becomes
# `--constraint=gpu-type=a100`.  node1 has the feature `gpu-type=a100` (it has no GPU: a label to place by).
#
# Memory limits are enforced by cgroups (task/cgroup, ConstrainRAMSpace) when the host mounts the cgroup v1
# memory controller (this project's machines do); elsewhere the cluster falls back to proctrack/linuxproc
# with polling (JobAcctGatherParams=OverMemoryKill) and says so: a job over its memory may then run on.
#
# Needs root (slurmd manages cgroups) and Debian's packages:
#   apt-get install -y --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge
# Settings: SLURM_CLUSTER_DIR, SLURM_CLUSTER_PORT (slurmctld's port; the nodes take the next three; 17817),
# SLURM_CLUSTER_CPUS (per node; 2), SLURM_CLUSTER_MEM (MB per node; 4096).
set -euo pipefail

B=${SLURM_CLUSTER_DIR:-/tmp/kubetrain-slurm}
PORT=${SLURM_CLUSTER_PORT:-17817}
CPUS=${SLURM_CLUSTER_CPUS:-2}
MEM=${SLURM_CLUSTER_MEM:-4096}
NODES="node1 node2 node3"
CONF=$B/etc/slurm.conf
export SLURM_CONF=$CONF

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need() {
  for tool in slurmctld slurmd munged sinfo sbatch; do
    command -v $tool >/dev/null || { echo "slurm-cluster: $tool is not installed; as root: apt-get install -y" \
      "--no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge" >&2; exit 1; }
  done
  [ "$(id -u)" = 0 ] || { echo "slurm-cluster: run as root (slurmd manages cgroups and runs jobs as their users)" >&2; exit 1; }
}

write_conf() {
  if [ -d /sys/fs/cgroup/memory ] && [ -w /sys/fs/cgroup/memory ]; then
    PT=proctrack/cgroup; TP=task/cgroup; JAG=jobacct_gather/cgroup; JAGP=""; ENFORCED=cgroup
  else
    PT=proctrack/linuxproc; TP=task/none; JAG=jobacct_gather/linux; JAGP="JobAcctGatherParams=OverMemoryKill"
    ENFORCED=polling
  fi
  local nodelines="" port=$((PORT + 1)) features
  for n in $NODES; do
    features=""
    [ $n = node1 ] && features="Features=gpu-type=a100"
    nodelines+="NodeName=$n NodeAddr=127.0.0.1 NodeHostname=localhost Port=$port CPUs=$CPUS RealMemory=$MEM $features State=UNKNOWN"$'\n'
    port=$((port + 1))
  done
  cat > $CONF.new <<CONF
# Written by kubetrain's scripts/slurm-cluster.sh (memory enforcement: $ENFORCED)
ClusterName=kubetrain
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$B/run/munge.socket
StateSaveLocation=$B/state
SlurmdSpoolDir=$B/spool/%n
SlurmctldPidFile=$B/run/slurmctld.pid
SlurmdPidFile=$B/run/slurmd-%n.pid
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=$PT
TaskPlugin=$TP
JobAcctGatherType=$JAG
JobAcctGatherFrequency=task=1
$JAGP
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
# 1: a node set down by hand (a test of node loss) stays down until the next "up" or a resume
ReturnToService=1
MaxJobCount=100000
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
$nodelines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  mv $CONF.new $CONF
  cat > $B/etc/cgroup.conf <<CONF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainDevices=no
CONF
}

up() {
  need
  mkdir -p $B/etc $B/state $B/log $B/run $B/munge
  chmod 0755 $B $B/run
  # munge: a key and socket of our own
  if [ ! -s $B/munge/munge.key ]; then
    dd if=/dev/urandom of=$B/munge/munge.key bs=1 count=1024 status=none
    chmod 0400 $B/munge/munge.key
  fi
  chmod 0700 $B/munge
  if ! alive $B/run/munged.pid; then
    munged --force --socket=$B/run/munge.socket --key-file=$B/munge/munge.key \
           --log-file=$B/log/munged.log --pid-file=$B/run/munged.pid --seed-file=$B/munge/munged.seed
  fi
  [ -f $CONF ] || write_conf
  if ! alive $B/run/slurmctld.pid; then
    slurmctld -f $CONF
  fi
  for n in $NODES; do
    mkdir -p $B/spool/$n
    alive $B/run/slurmd-$n.pid || slurmd -f $CONF -N $n
  done
  # Wait until the three nodes have registered (idle, or busy with jobs of an earlier `up`).
  for _ in $(seq 1 100); do
    [ "$(sinfo -h -N -t idle,mixed,allocated -o '%N' 2>/dev/null | sort -u | wc -l)" = 3 ] && break
    sleep 0.2
  done
  if [ "$(sinfo -h -N -t idle,mixed,allocated -o '%N' 2>/dev/null | sort -u | wc -l)" != 3 ]; then
    sinfo -N -l >&2 || true
    echo "slurm-cluster: the nodes did not come up; see $B/log/" >&2
    exit 1
  fi
  # A node left down by a test (scontrol update ... state=down) comes back with the next `up`.
  for n in $(sinfo -h -N -t down,drain -o '%N' | sort -u); do
    scontrol update nodename=$n state=resume || true
  done
  grep -q 'memory enforcement: polling' $CONF && \
    echo "slurm-cluster: no writable cgroup v1 memory controller here: memory limits are only polled" >&2
  echo "export SLURM_CONF=$CONF"
}

down() {
  # Each daemon takes about 2 s to stop after SIGTERM: all are signalled first, then waited for together
  # (5 s at most, then SIGKILL), so stopping the cluster takes one daemon's stop, not five in a row.
  local pids=() files=()
  for f in $B/run/slurmd-*.pid $B/run/slurmctld.pid $B/run/munged.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    files+=("$f")
    if kill -0 "$p" 2>/dev/null; then kill "$p" || true; pids+=("$p"); fi
  done
  for _ in $(seq 1 100); do
    left=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ $left = 0 ] && break
    sleep 0.05
  done
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true; done
  [ ${#files[@]} = 0 ] || rm -f "${files[@]}"
  # slurmd's cgroups (cgroup v1: one slurm_<node> per controller), once no slurmd of that node name is left
  for n in $NODES; do
    pgrep -f "slurmd .*-N $n\$" >/dev/null && continue
    for dir in /sys/fs/cgroup/*/slurm_$n; do
      [ -d "$dir" ] && { find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true; }
    done
  done
  case "$B" in /|"") echo "slurm-cluster: refusing to remove '$B'" >&2; exit 1;; esac
  rm -rf "$B"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) sinfo -N -l ;;
  *) echo "usage: $0 up|down|status   (folder: \$SLURM_CLUSTER_DIR, default /tmp/kubetrain-slurm)" >&2; exit 2 ;;
esac
