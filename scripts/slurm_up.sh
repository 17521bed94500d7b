#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests and CI (Debian's slurmctld, slurmd, slurm-client and
# munge; no systemd, no accounting). All state lives under DIR (default /tmp/sftmix-slurm): config, munge key and
# socket, spool, logs, pid files. Prints the line to eval:  export SLURM_CONF=DIR/slurm.conf
# Stop it with scripts/slurm_down.sh DIR (by the daemons' PIDs; never pkill).
#   --install   apt-get install the packages first when they are missing (CI; needs root)
#   PARTITION   partition name (default: debug)
set -euo pipefail
install=0
if [ "${1:-}" = "--install" ]; then install=1; shift; fi
dir=${1:-/tmp/sftmix-slurm}
partition=${PARTITION:-debug}

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  if [ "$install" = 1 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge) \
      >"${TMPDIR:-/tmp}/slurm-install.log" 2>&1 || { echo "slurm_up: apt-get install failed (see ${TMPDIR:-/tmp}/slurm-install.log)" >&2; exit 1; }
  else
    echo "slurm_up: slurmctld/slurmd/munged not installed (apt-get install slurmctld slurmd slurm-client munge)" >&2
    exit 1
  fi
fi
export PATH=$PATH:/usr/sbin:/sbin

mkdir -p "$dir"/{spool,state,log,munge,run}
chmod 700 "$dir/munge"
if [ ! -s "$dir/munge/munge.key" ]; then
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chmod 400 "$dir/munge/munge.key"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ctl_port=$(free_port); d_port=$(free_port)
while [ "$d_port" = "$ctl_port" ]; do d_port=$(free_port); done
cpus=$(nproc)
mem=$(( $(free -m | awk '/^Mem:/{print $2}') * 9 / 10 ))
user=$(id -un)

cat >"$dir/slurm.conf" <<EOF
ClusterName=sftmix
SlurmctldHost=localhost
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$partition Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket.2" \
  --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 1 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "slurm_up: the node did not become idle in 30 s; logs in $dir/log" >&2
exit 1
