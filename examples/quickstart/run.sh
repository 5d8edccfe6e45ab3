#!/usr/bin/env bash
# Quick start: build Wharf, make a small git repository from examples/quickstart/app,
# and run examples/quickstart/pipeline.yaml against it with `wharf run`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

command -v git >/dev/null || { echo "git is needed: apt-get install -y git" >&2; exit 1; }
if [ -x target/release/wharf ]; then
  echo "==> building wharf (cargo build --release --bin wharf; seconds when little changed)"
else
  echo "==> building wharf (cargo build --release --bin wharf): the first build compiles about"
  echo "    330 crates, 5 to 20 minutes depending on the machine (2 busy cores: the long end)."
  echo "    cargo shows each crate as it goes."
fi
cargo build --release -p wharf --bin wharf

# A fresh repository each time, so the example shows a real clone at depth 1.
repo="$root/.wharf/quickstart/greet.git"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R examples/quickstart/app/. "$work/"
git -C "$work" init --quiet --initial-branch=main
git -C "$work" add .
git -C "$work" -c user.name=Wharf -c user.email=wharf@localhost commit --quiet -m "greet $(cat "$work/VERSION")"
rm -rf "$repo"
mkdir -p "$(dirname "$repo")"
git clone --quiet --bare "$work" "$repo"

echo "==> wharf run examples/quickstart/pipeline.yaml"
exec target/release/wharf run examples/quickstart/pipeline.yaml -p "REPO=file://$repo" "$@"
