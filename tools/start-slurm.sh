#!/usr/bin/env bash
# A one-node SLURM on this machine, as root: installs Debian's slurm-wlm and munge when missing,
# writes a slurm.conf from the machine's real CPUs and memory, starts munged, slurmctld, slurmd
# and waits until the node is idle. Idempotent: a running cluster is left as it is.
# Used by the SLURM tests (tests/test_slurm.py) and .ci/run; exits 3 when apt or root is missing.
set -euo pipefail

log() { echo "start-slurm: $*" >&2; }

if [ "$(id -u)" != 0 ]; then log "needs root (to install packages and run slurmd)"; exit 3; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if ! command -v apt-get >/dev/null; then log "slurm-wlm/munge missing and no apt-get"; exit 3; fi
  log "installing slurm-wlm and munge (apt-get, about two minutes)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then log "already running"; exit 0; fi

host=$(hostname -s)
cpus=$(nproc)
# RealMemory must not exceed what slurmd sees free, or the node is drained: 90% of MemAvailable.
mem_mb=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf_dir=/etc/slurm
mkdir -p "$conf_dir" /var/spool/slurmd /var/spool/slurmctld /var/log/slurm /run/munge
cat > "$conf_dir/slurm.conf" <<CONF
# Written by lora-tsd-bench tools/start-slurm.sh: a one-node test cluster.
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
# No cgroups in a container: track processes by parent id, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmUser=root
# No accounting daemon: finished jobs stay visible to squeue (the executor's status command).
MinJobAge=600
ReturnToService=2
JobRequeue=1
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

chown munge:munge /run/munge
if ! pgrep -x munged >/dev/null; then
  [ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  su -s /bin/sh munge -c /usr/sbin/munged
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then log "node $host idle ($cpus CPUs, $mem_mb MB)"; exit 0; fi
  sleep 1
done
log "the node never became idle:"; sinfo >&2 || true; tail -n 20 /var/log/slurm/slurmd.log >&2 || true
exit 1
