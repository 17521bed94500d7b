#!/usr/bin/env bash
# Stop the Ray cluster scripts/ray_up.sh started in DIR: SIGTERM to every process whose command line names DIR,
# then SIGKILL to those still alive after 15 s (two of Ray's daemons ignore SIGTERM for ~10 s). Never `ray stop`.
set -u
dir=${1:-/tmp/sftmix-ray}
pids() {
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$dir/"; then echo "${p#/proc/}"; fi
  done
}
list=$(pids)
[ -n "$list" ] || exit 0
kill $list 2>/dev/null
for _ in $(seq 1 30); do
  alive=""
  for p in $list; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
  [ -n "$alive" ] || exit 0
  sleep 0.5
done
kill -9 $alive 2>/dev/null
exit 0
