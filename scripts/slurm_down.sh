#!/usr/bin/env bash
# Stop the one-node Slurm cluster that scripts/slurm_up.sh started in DIR, by the daemons' own PID files.
set -u
dir=${1:-/tmp/sftmix-slurm}
for d in slurmd slurmctld munged; do
  f="$dir/run/$d.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
done
exit 0
