#!/usr/bin/env bash
# The nginx chart example (the seed's best practice 5.2) end to end on this machine:
# bring up dockerd and the test registry (scripts/test-env.sh), make a git repository of
# examples/nginx-chart/app (a Dockerfile and the chart in nginx/), start a Wharf server,
# register the registry with the workspaces `devops` (images) and `charts`, a cluster `local`, and run
# examples/nginx-chart/pipeline.yaml twice: build nginx:1.0.N, publish the chart
# charts/nginx version 1.0.N, install (run 1) then upgrade (run 2) the release `nginx`.
# Then the instance is rolled back to revision 1 from the CLI, and its history shown.
# The cluster is the Kubernetes API test double (wharf-kube-fake, HTTPS on loopback),
# or yours: WHARF_KUBECONFIG=~/.kube/config [WHARF_KUBECONTEXT=ctx] bash examples/nginx-chart/run.sh
# (the image must then be pullable by the cluster from REGISTRY_HOST).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

eval "$(bash scripts/test-env.sh | grep '^WHARF_TEST_')"
echo "==> building wharf and wharf-kube-fake"
cargo build --quiet -p wharf -p wharf-kube-fake
wharf="$root/target/debug/wharf"

work=$(mktemp -d)
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

cp -R examples/nginx-chart/app "$work/app"
git -C "$work/app" init --quiet --initial-branch=master
git -C "$work/app" add .
git -C "$work/app" -c user.name=Wharf -c user.email=wharf@localhost commit --quiet -m "nginx and its chart"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WHARF_SERVER="http://127.0.0.1:$port" WHARF_TOKEN=example-token
if [ -n "${WHARF_KUBECONFIG:-}" ]; then
  kubeconfig=$WHARF_KUBECONFIG
  allow=${WHARF_OUTBOUND_ALLOW:-}
else
  kubeconfig="$work/kubeconfig"
  "$root/target/debug/wharf-kube-fake" --rollout-delay-ms 1000 --kubeconfig "$kubeconfig" >/dev/null 2>"$work/fake.log" &
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
"$wharf" registries add-workspace local charts
echo "==> wharf clusters add local"
"$wharf" clusters add local --kubeconfig "$kubeconfig" ${WHARF_KUBECONTEXT:+--context "$WHARF_KUBECONTEXT"}
"$wharf" pipelines apply examples/nginx-chart/pipeline.yaml
params=(-p "REPO=file://$work/app" -p "BASE=$WHARF_TEST_BUSYBOX_IMAGE" -p "REGISTRY_HOST=$WHARF_TEST_REGISTRY")
for n in 1 2; do
  echo "==> wharf runs start nginx-chart --follow   (run $n: chart 1.0.$n, release revision $n)"
  "$wharf" runs start nginx-chart "${params[@]}" --follow
done
echo "==> wharf registries tags local devops/nginx   (the images)"
"$wharf" registries tags local devops/nginx
echo "==> wharf registries tags local charts/nginx   (the chart, an OCI Helm artifact)"
"$wharf" registries tags local charts/nginx
echo "==> wharf releases list local"
"$wharf" releases list local
echo "==> wharf releases rollback local default nginx 1"
"$wharf" releases rollback local default nginx 1
echo "==> wharf releases show local default nginx"
"$wharf" releases show local default nginx
# What a user's own helm sees: Wharf stores revisions as Helm does (the oracle from
# scripts/k8s-tools.sh when it can be had; it is never needed to run Wharf).
if helm=$(bash scripts/k8s-tools.sh 2>/dev/null | sed -n 's/^WHARF_TEST_HELM=//p') && [ -n "$helm" ]; then
  echo "==> helm history nginx   (the real helm $("$helm" version --short), same cluster)"
  HOME="$work" "$helm" history nginx --namespace default --kubeconfig "$kubeconfig" ${WHARF_KUBECONTEXT:+--kube-context "$WHARF_KUBECONTEXT"}
fi
