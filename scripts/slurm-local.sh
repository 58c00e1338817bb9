#!/usr/bin/env bash
# A real single-node Slurm cluster (munge + slurmctld + slurmd) under one directory, without systemd or cgroups.
# Used by the Slurm integration tests; also handy for trying `spotrun slurm --submit` on a laptop or CI box.
#
#   scripts/slurm-local.sh install        apt-get install slurmctld slurmd slurm-client munge if missing (root)
#   scripts/slurm-local.sh start BASE     start a cluster with every file under BASE; prints `export SLURM_CONF=...`
#   scripts/slurm-local.sh stop BASE      cancel its jobs and stop its daemons by PID file (never by name)
#
# Node: CPUs=4 (more than the cores: config_overrides), partitions `debug` (default) and `high` (preempts debug,
# PreemptMode=REQUEUE). cred_expire=10, so a requeued job may start again after ~16 s instead of ~120 s.
set -euo pipefail

cmd=${1:-}
case "$cmd" in
install)
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
      && command -v munged >/dev/null; then
    echo "slurm-local: slurm and munge are installed"
    exit 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "slurm-local: need root to apt-get install slurmctld slurmd slurm-client munge" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  echo "slurm-local: installed $(slurmctld -V)"
  ;;
start)
  base=$(realpath -m "${2:?usage: slurm-local.sh start BASE}")
  mkdir -p "$base"/{etc,munge,state,spool,log,run}
  chmod 755 "$base/munge"
  node=$(hostname -s)
  if [ ! -f "$base/etc/munge.key" ]; then
    mungekey --create --keyfile="$base/etc/munge.key" --bits=1024
    chmod 400 "$base/etc/munge.key"
  fi
  munged --key-file="$base/etc/munge.key" --socket="$base/munge/munge.socket" \
    --pid-file="$base/run/munged.pid" --log-file="$base/log/munged.log" --seed-file="$base/munge/seed" --force
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  cat > "$base/etc/slurm.conf" <<CONF
ClusterName=spotrun-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$base/munge/munge.socket,cred_expire=10
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/run/slurmctld.pid
SlurmdPidFile=$base/run/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
SlurmctldPort=$((20000 + RANDOM % 5000))
SlurmdPort=$((25000 + RANDOM % 5000))
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmctldParameters=preempt_send_user_signal
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=300
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=4 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES PriorityTier=1 MaxTime=INFINITE State=UP
PartitionName=high Nodes=$node PriorityTier=10 MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$base/etc/slurm.conf
  slurmctld -c -f "$SLURM_CONF"
  slurmd -N "$node" -f "$SLURM_CONF"
  for _ in $(seq 1 150); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    if [ "$state" = idle ]; then
      echo "export SLURM_CONF=$SLURM_CONF"
      exit 0
    fi
    sleep 0.2
  done
  echo "slurm-local: node $node did not become idle (state: ${state:-none}); logs in $base/log" >&2
  "$0" stop "$base" >&2 || true
  exit 1
  ;;
stop)
  base=$(realpath -m "${2:?usage: slurm-local.sh stop BASE}")
  export SLURM_CONF=$base/etc/slurm.conf
  if [ -f "$SLURM_CONF" ]; then
    squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
  fi
  for d in slurmd slurmctld munged; do
    f=$base/run/$d.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  ;;
*)
  echo "usage: $0 install | start BASE | stop BASE" >&2
  exit 2
  ;;
esac
