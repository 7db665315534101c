#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, to try `--on slurm` without a cluster (and for the
# tests): munged, slurmctld and slurmd run as root from DIR, with a minimal slurm.conf there.
#
#   sudo scripts/slurm-local.sh start DIR   # then: export SLURM_CONF=DIR/slurm.conf
#   sudo scripts/slurm-local.sh stop DIR
#
# Needs Debian's (or Ubuntu's) slurmctld, slurmd, slurm-client and munge packages. `start` prints
# the SLURM_CONF line to export; `stop` cancels every job, waits for the queue to empty, shuts
# the daemons down and stops munged if `start` started it. No systemd is needed.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
ACTION=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

# Is PID alive (a zombie counts as gone: PID 1 may reap exited daemons late)?
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)
  [ "$state" != Z ]
}

wait_for() { # SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local i
  for ((i = 0; i < limit * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "slurm-local: $what did not happen within $limit s (logs in $DIR/log)" >&2
  return 1
}

start() {
  for p in munged slurmctld slurmd sbatch; do
    command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || {
      echo "slurm-local: $p is missing: apt-get install slurmctld slurmd slurm-client munge" >&2
      exit 1
    }
  done
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
  # munge: reuse a running munged, or start one (and remember it, to stop it later).
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    install -d -o munge -g munge -m 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
      mungekey --create --keyfile /etc/munge/munge.key
      chown munge:munge /etc/munge/munge.key
      chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 "munged's start" sh -c 'munge -n | unmunge'
    cat /run/munge/munged.pid >"$DIR/run/munged.started"
  fi
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
  cat >"$CONF" <<EOF
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
DependencyParameters=kill_invalid_depend
MinJobAge=600
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmd 22.05 always loads a cgroup plugin; v1 with linuxproc and task/none loads and never
  # touches the cgroup filesystem (the default autodetection kills slurmd without systemd).
  echo "CgroupPlugin=cgroup/v1" >"$DIR/cgroup.conf"
  setsid slurmctld -D -f "$CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 &
  echo $! >"$DIR/run/slurmctld.started"
  wait_for 20 "slurmctld's start" sh -c 'scontrol ping | grep -q "is UP"'
  setsid slurmd -D -f "$CONF" </dev/null >>"$DIR/log/slurmd.out" 2>&1 &
  echo $! >"$DIR/run/slurmd.started"
  wait_for 20 "the node becoming idle" sh -c '[ "$(sinfo -h -N -o %T)" = idle ]'
  echo "export SLURM_CONF=$CONF"
}

stop() {
  [ -f "$CONF" ] || { echo "slurm-local: no cluster in $DIR" >&2; exit 1; }
  # Jobs first: a slurmstepd left by a shutdown under a running job retries for ever.
  if [ -f "$DIR/run/slurmctld.started" ] && alive "$(cat "$DIR/run/slurmctld.started")"; then
    scancel --full --signal=KILL --state=RUNNING >/dev/null 2>&1 || true
    scancel >/dev/null 2>&1 || squeue -h -o %i | xargs -r scancel >/dev/null 2>&1 || true
    wait_for 30 "the queue emptying" sh -c '[ -z "$(squeue -h -o %i)" ]' || true
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  local f pid
  for f in slurmd slurmctld munged; do
    [ -f "$DIR/run/$f.started" ] || continue
    pid=$(cat "$DIR/run/$f.started")
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/run/$f.started"
  done
}

case $ACTION in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
