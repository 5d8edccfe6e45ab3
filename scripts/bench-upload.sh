#!/usr/bin/env bash
# Measures a tarball upload through the server: a `docker save` of an image with a
# SIZE_MB random layer, uploaded with `wharf registries upload`, while the server's
# resident memory is sampled. The floor is `docker push` of the same image to the same
# registry in the same run. Usage: bash scripts/bench-upload.sh [SIZE_MB] [PROFILE]
# (PROFILE: debug or release; the binary is target/PROFILE/wharf).
set -euo pipefail
size_mb=${1:-256}
profile=${2:-debug}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$(bash scripts/test-env.sh | grep '^WHARF_TEST_')"
if [ "$profile" = release ]; then cargo build --quiet --release -p wharf; else cargo build --quiet -p wharf; fi
wharf="$root/target/$profile/wharf"

work=$(mktemp -d)
server_pid=
stamp=$(date +%s)
tag="wharf-bench/upload$stamp:big"
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  docker rmi -f "$tag" "$WHARF_TEST_REGISTRY/floor/upload$stamp:big" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

printf 'FROM %s\nRUN head -c %d /dev/urandom > /blob\n' "$WHARF_TEST_BUSYBOX_IMAGE" $((size_mb * 1024 * 1024)) \
  | docker build -q -t "$tag" - >/dev/null
docker save "$tag" -o "$work/image.tar"
tar_bytes=$(stat -c %s "$work/image.tar")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WHARF_SERVER="http://127.0.0.1:$port" WHARF_TOKEN=bench-token
WHARF_ADMIN_TOKEN=$WHARF_TOKEN "$wharf" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fsS "$WHARF_SERVER/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
WHARF_REGISTRY_PASSWORD=$WHARF_TEST_REGISTRY_PASSWORD "$wharf" registries add local --url "$WHARF_TEST_REGISTRY_URL" \
  --insecure --username "$WHARF_TEST_REGISTRY_USER" --workspace "bench$stamp" >/dev/null
idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")

start=$(date +%s.%N)
"$wharf" registries upload local "$work/image.tar" --workspace "bench$stamp" >/dev/null 2>&1
upload_s=$(echo "$(date +%s.%N) - $start" | bc)
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")

# The floor: the Docker Engine pushing the same image (it compresses the layer).
config="$work/docker-config"
echo "$WHARF_TEST_REGISTRY_PASSWORD" | docker --config "$config" login -u "$WHARF_TEST_REGISTRY_USER" --password-stdin "$WHARF_TEST_REGISTRY" >/dev/null 2>&1
docker tag "$tag" "$WHARF_TEST_REGISTRY/floor/upload$stamp:big"
start=$(date +%s.%N)
docker --config "$config" push "$WHARF_TEST_REGISTRY/floor/upload$stamp:big" >/dev/null
push_s=$(echo "$(date +%s.%N) - $start" | bc)

echo "tarball:             $((tar_bytes / 1024 / 1024)) MiB ($profile build)"
echo "server RSS idle:     $((idle_kb / 1024)) MiB"
echo "server RSS peak:     $((peak_kb / 1024)) MiB (during the upload)"
echo "wharf upload:        ${upload_s} s"
echo "docker push (floor): ${push_s} s"
echo "ratio:               $(echo "scale=2; $upload_s / $push_s" | bc)"
grep -o "tarball blobs pushed.*\|read=[^ ]* push=[^ ]*" "$work/server.log" | head -1 || true
