#!/usr/bin/env bash
# The 2048 example end to end on this machine: bring up dockerd and the test registry
# (scripts/test-env.sh), make a git repository of examples/2048/app, start a Wharf
# server, register the registry with the workspace `devops`, and run
# examples/2048/pipeline.yaml: build jack-2048:alpha-N, push it, test it, list its tags.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

eval "$(bash scripts/test-env.sh | grep '^WHARF_TEST_')"
echo "==> building wharf"
cargo build --quiet -p wharf
wharf="$root/target/debug/wharf"

work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cp -R examples/2048/app "$work/app"
git -C "$work/app" init --quiet --initial-branch=master
git -C "$work/app" add .
git -C "$work/app" -c user.name=Wharf -c user.email=wharf@localhost commit --quiet -m "2048"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WHARF_SERVER="http://127.0.0.1:$port" WHARF_TOKEN=example-token
WHARF_ADMIN_TOKEN=$WHARF_TOKEN "$wharf" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -fsS "$WHARF_SERVER/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

echo "==> wharf registries add local ($WHARF_TEST_REGISTRY_URL, workspace devops)"
WHARF_REGISTRY_PASSWORD=$WHARF_TEST_REGISTRY_PASSWORD "$wharf" registries add local \
  --url "$WHARF_TEST_REGISTRY_URL" --insecure --username "$WHARF_TEST_REGISTRY_USER" --workspace devops
"$wharf" pipelines apply examples/2048/pipeline.yaml
echo "==> wharf runs start deploy-2048 --follow"
"$wharf" runs start deploy-2048 -p "REPO=file://$work/app" -p "BASE=$WHARF_TEST_BUSYBOX_IMAGE" --follow
echo "==> wharf registries tags local devops/jack-2048"
"$wharf" registries tags local devops/jack-2048
