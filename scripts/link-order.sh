#!/usr/bin/env bash
# Regenerates crates/cli/link/startup.order: the functions the release `wharf serve`
# runs while it starts and idles, which the linker puts together at the front of
# .text (see crates/cli/build.rs). Run it after changes that touch start-up, and
# compare `wharf-bench figures` before and after.
#
#   bash scripts/link-order.sh [ROUNDS]     (needs valgrind and perf; about 7 minutes on 2 cores)
#
# Round 1 runs two starts (a new data directory, then the same one again), a few
# requests and 3 s of idling under callgrind, which sees every function executed. The
# Docker Engine of the test environment is started first: a server probes it at start,
# and that code is part of an ordinary start.
# Callgrind's CPU has no SHA or AVX-512, so some code paths differ from a real start:
# each further round (ROUNDS, default 3) relinks with the list so far, repeats the
# scenario natively under `perf record -e minor-faults`, and adds the functions whose
# code faulted outside the list. The names are the symbol table's (mangled), so the list
# matches the toolchain and the sources it was made from; stale names are skipped.
set -euo pipefail
rounds=${1:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for tool in valgrind perf curl; do
  command -v "$tool" >/dev/null || { echo "link-order: $tool is needed (apt-get install valgrind linux-perf curl)" >&2; exit 1; }
done
eval "$(bash scripts/test-env.sh | grep '^WHARF_TEST_')"
docker info >/dev/null 2>&1 || { echo "link-order: the Docker Engine does not answer (bash scripts/test-env.sh)" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}
wharf="$target/release/wharf"
order="$root/crates/cli/link/startup.order"
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# One start of `wharf serve` on DATA under WRAPPER..., a few requests, idle, SIGTERM.
scenario() {
  local data=$1; shift
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  WHARF_ADMIN_TOKEN=order-token WHARF_LOG=warn "$@" "$wharf" serve --listen "127.0.0.1:$port" --data-dir "$data" \
    </dev/null >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null
  curl -fsS -H 'Authorization: Bearer order-token' "http://127.0.0.1:$port/api/v1/pipelines?limit=50" >/dev/null || true
  sleep 3
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=
}

# Function names in the binary's own code (not libc's) that a callgrind profile ran.
callgrind_names() {
  awk -v bin="$wharf" '/^ob=/ { ob = substr($0, 4) } /^fn=/ && ob == bin { print substr($0, 4) }' "$@" |
    sed "s/'[0-9]*\$//" | grep -v '^0x'
}

echo "==> round 1: callgrind" >&2
cargo build --quiet --release -p wharf
: >"$work/names"
for start in 1 2; do
  scenario "$work/data-cg" valgrind --quiet --tool=callgrind --demangle=no --dump-instr=no --compress-strings=no \
    --compress-pos=no --callgrind-out-file="$work/cg.$start"
  callgrind_names "$work/cg.$start" >>"$work/names"
done
mkdir -p "$(dirname "$order")"
sort -u "$work/names" >"$order"
echo "    $(wc -l <"$order") functions" >&2

for round in $(seq 2 "$rounds"); do
  cargo build --quiet --release -p wharf
  echo "==> round $round: page faults outside the list" >&2
  : >"$work/faults"
  rm -rf "$work/data-pf"
  for start in 1 2; do
    scenario "$work/data-pf" perf record --quiet -o "$work/pf.data" -e minor-faults -c 1 -d --
    # An instruction fetch's fault has the faulting address equal to the IP.
    perf script --no-demangle -i "$work/pf.data" -F ip,addr,sym,dso 2>/dev/null |
      awk -v bin="($wharf)" '$1 == $4 && $3 == bin { sub(/\+0x[0-9a-f]+$/, "", $2); print $2 }' >>"$work/faults"
  done
  grep -vxF -f "$order" "$work/faults" | grep -v '^_init$\|^_start$\|^\[unknown\]$' | sort -u >"$work/new" || true
  echo "    $(wc -l <"$work/faults") faults in the binary's code, $(wc -l <"$work/new") in functions not yet listed" >&2
  [ -s "$work/new" ] || break
  sort -u "$order" "$work/new" -o "$order"
done
cargo build --quiet --release -p wharf
echo "$order: $(wc -l <"$order") functions" >&2
