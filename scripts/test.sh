#!/usr/bin/env bash
# The whole test suite: installs what the tests need (when missing and allowed),
# then runs every test of the workspace. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
# Time zone rules for timer and validation tests (jiff reads the system database).
[ -f /usr/share/zoneinfo/Europe/Berlin ] || need_apt+=(tzdata)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install them, or run as root on Debian to have this script do it)" >&2
    exit 1
  fi
fi

# Headless Chromium and its WebDriver for the web UI's browser test (crates/cli/tests/ui.rs).
# Optional: without them that test says why and skips, except under CI=true.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing chromium chromium-driver (for the browser test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "==> no chromium/chromedriver (apt-get install chromium chromium-driver): the browser test will skip"
  fi
fi

# The Docker Engine, a registry with htpasswd auth and the local busybox image for
# the container tests. Tests run this script themselves too (it is idempotent); here
# it runs first so that CI's log shows what was installed or why it could not be.
if env_out="$(bash scripts/test-env.sh)"; then
  echo "==> container test environment ready: $(echo "$env_out" | tr '\n' ' ')"
else
  echo "==> no container test environment (see the reason above); container tests will say they skip"
fi

# Snapshots are compared, never rewritten, when tests run here.
export INSTA_UPDATE=no
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "(cargo-nextest not found; using cargo test)"
  cargo test --workspace --no-fail-fast "$@"
fi
