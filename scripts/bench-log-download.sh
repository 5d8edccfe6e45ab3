#!/usr/bin/env bash
# Server memory while clients download a whole-run log (GET /runs/{id}/log): for each
# wharf binary given, a server on 127.0.0.1 with a fresh data directory runs one tiny
# pipeline, its task log is grown to SIZE_MB on disk (appended straight to the file, as
# a long build's output would be), then CLIENTS parallel downloads (curl, each bounded
# by --max-time 120) read it while the server's RSS is sampled every 20 ms.
# Usage: bash scripts/bench-log-download.sh [BIN...]   (default: target/release/wharf)
# Environment: SIZE_MB (default 98), CLIENTS (default 6).
set -euo pipefail
size_mb=${SIZE_MB:-98}
clients=${CLIENTS:-6}
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- "$root/target/release/wharf"
work=$(mktemp -d)
# A root server runs host tasks as its task user, who must pass through to the data dir.
chmod 0711 "$work"
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

printf '%-48s %10s %12s %12s %10s\n' binary "idle MiB" "peak MiB" "bytes/client" seconds
for wharf in "$@"; do
  data="$work/data-$(basename "$(dirname "$wharf")")-$RANDOM"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  base="http://127.0.0.1:$port/api/v1"
  auth=(-H "Authorization: Bearer bench-token")
  WHARF_ADMIN_TOKEN=bench-token WHARF_ALLOW_HOST=1 "$wharf" serve --executor host \
    --listen "127.0.0.1:$port" --data-dir "$data" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  printf 'name: biglog\nstages:\n  - name: Build\n    tasks:\n      - name: main\n        type: script\n        script: echo small\n' \
    | curl -fsS "${auth[@]}" -H 'Content-Type: application/yaml' --data-binary @- "$base/pipelines" >/dev/null
  run=$(curl -fsS "${auth[@]}" -H 'Content-Type: application/json' -d '{}' "$base/pipelines/biglog/runs" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for _ in $(seq 200); do
    curl -fsS "${auth[@]}" "$base/runs/$run" | grep -q '"status":"succeeded"' && break
    sleep 0.05
  done
  # SIZE_MB of 1 KB lines, as the stored format has them.
  python3 - "$data/logs/$run/0-0.log" "$size_mb" <<'PY'
import sys
line = ("2026-01-01T00:00:00.000Z out " + "x" * 995 + "\n").encode()
block = line * 1024
with open(sys.argv[1], "ab") as f:
    for _ in range(int(sys.argv[2])):
        f.write(block)
PY
  idle=$(rss_kb "$server_pid")
  peak=$idle
  start=$(date +%s.%N)
  pids=()
  for i in $(seq "$clients"); do
    curl -fsS --max-time 120 "${auth[@]}" -o "$work/out-$i" "$base/runs/$run/log" &
    pids+=($!)
  done
  while kill -0 "${pids[@]}" 2>/dev/null; do
    now=$(rss_kb "$server_pid")
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.02
  done
  for p in "${pids[@]}"; do wait "$p"; done
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  bytes=$(stat -c %s "$work/out-1")
  for i in $(seq 2 "$clients"); do cmp -s "$work/out-1" "$work/out-$i" || { echo "download $i differs" >&2; exit 1; }; done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  printf '%-48s %10d %12d %12d %10.2f\n' "$wharf" $((idle / 1024)) $((peak / 1024)) "$bytes" "$seconds"
  rm -f "$work"/out-*
done
