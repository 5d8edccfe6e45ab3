#!/usr/bin/env bash
# The 2048 example end to end on this machine: bring up dockerd and the test registry
# (scripts/test-env.sh), make a git repository of examples/2048/app, start a Wharf
# server, register the registry with the workspace `devops` and a cluster `local`, and
# run examples/2048/pipeline.yaml: build jack-2048:alpha-N, push it, test it, deploy it
# (Deployment, Service, Ingress) and wait for the rollout, then list its tags.
# The cluster is the Kubernetes API test double (wharf-kube-fake, HTTPS on loopback),
# or yours: WHARF_KUBECONFIG=~/.kube/config [WHARF_KUBECONTEXT=ctx] bash examples/2048/run.sh
# (the image must then be pullable by the cluster from the test registry's address).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

eval "$(bash scripts/test-env.sh | grep '^WHARF_TEST_')"
echo "==> building wharf and wharf-kube-fake"
cargo build --quiet -p wharf -p wharf-kube-fake
wharf="$root/target/debug/wharf"

work=$(mktemp -d)
# Host tasks run as an unprivileged user (when the server is root), who must be able to
# reach the workspaces below the data directory: mktemp makes the directory private.
chmod o+x "$work"
server_pid=
fake_pid=
cleanup() {
  status=$?
  if [ "$status" != 0 ] && [ -f "$work/server.log" ]; then
    echo "==> the server's log (last 20 lines)" >&2
    tail -n 20 "$work/server.log" >&2
  fi
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cp -R examples/2048/app "$work/app"
git -C "$work/app" init --quiet --initial-branch=master
git -C "$work/app" add .
git -C "$work/app" -c user.name=Wharf -c user.email=wharf@localhost commit --quiet -m "2048"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WHARF_SERVER="http://127.0.0.1:$port" WHARF_TOKEN=example-token
if [ -n "${WHARF_KUBECONFIG:-}" ]; then
  kubeconfig=$WHARF_KUBECONFIG
  allow=${WHARF_OUTBOUND_ALLOW:-}
else
  # The test double: rollouts take 2 s, so the log shows kubectl's progress messages.
  kubeconfig="$work/kubeconfig"
  "$root/target/debug/wharf-kube-fake" --rollout-delay-ms 2000 --kubeconfig "$kubeconfig" >/dev/null 2>"$work/fake.log" &
  fake_pid=$!
  for _ in $(seq 50); do [ -s "$kubeconfig" ] && break; sleep 0.1; done
  # Loopback is an internal address: calling it is the admin's decision.
  allow=127.0.0.1
fi
WHARF_ADMIN_TOKEN=$WHARF_TOKEN "$wharf" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  ${allow:+--outbound-allow "$allow"} >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -fsS "$WHARF_SERVER/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

echo "==> wharf registries add local ($WHARF_TEST_REGISTRY_URL, workspace devops)"
WHARF_REGISTRY_PASSWORD=$WHARF_TEST_REGISTRY_PASSWORD "$wharf" registries add local \
  --url "$WHARF_TEST_REGISTRY_URL" --insecure --username "$WHARF_TEST_REGISTRY_USER" --workspace devops
echo "==> wharf clusters add local"
"$wharf" clusters add local --kubeconfig "$kubeconfig" ${WHARF_KUBECONTEXT:+--context "$WHARF_KUBECONTEXT"}
"$wharf" pipelines apply examples/2048/pipeline.yaml
echo "==> wharf runs start deploy-2048 --follow"
"$wharf" runs start deploy-2048 -p "REPO=file://$work/app" -p "BASE=$WHARF_TEST_BUSYBOX_IMAGE" --follow
echo "==> wharf registries tags local devops/jack-2048"
"$wharf" registries tags local devops/jack-2048
