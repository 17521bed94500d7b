#!/usr/bin/env bash
# A real local Ray cluster for tests and CI: a head and a second node process on this machine (1 CPU each by
# default), with its own token (never ~/.ray/auth_token, which other clusters on this machine may use) and its own
# temp dir DIR (default /tmp/sftmix-ray; keep it short: Ray's socket paths must fit 107 bytes).
# Prints the lines to eval: export RAY_ADDRESS=... RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=...
# Stop it with scripts/ray_down.sh DIR: it signals the processes whose command line names DIR (never `ray stop`,
# which ends every Ray process on the machine).
#   RAY=path/to/ray (default: ray on PATH)   CPUS=1 (per node)
set -euo pipefail
dir=${1:-/tmp/sftmix-ray}
ray=${RAY:-ray}
cpus=${CPUS:-1}
mkdir -p "$dir"
[ -s "$dir/auth_token" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$dir/auth_token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$dir/auth_token RAY_USAGE_STATS_ENABLED=0
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
common=(--num-cpus "$cpus" --num-gpus 0 --disable-usage-stats)
"$ray" start --head --node-ip-address 127.0.0.1 --port "$port" --temp-dir "$dir/t" --include-dashboard false \
  "${common[@]}" >"$dir/head.log" 2>&1 || { cat "$dir/head.log" >&2; exit 1; }
"$ray" start --address "127.0.0.1:$port" --node-ip-address 127.0.0.1 "${common[@]}" >"$dir/node2.log" 2>&1 \
  || { cat "$dir/node2.log" >&2; exit 1; }
echo "export RAY_ADDRESS=127.0.0.1:$port RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$dir/auth_token"
