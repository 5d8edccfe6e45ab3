#!/usr/bin/env bash
# Brings up what the container tests need, idempotently, and prints it as KEY=VALUE
# lines on stdout (everything else goes to stderr):
#   - the Docker Engine (Debian `docker.io`), started as `dockerd` when not answering;
#   - an OCI registry (Debian `docker-registry`) on 127.0.0.1 with htpasswd auth and
#     deletes enabled;
#   - the local base image `FROM scratch` + Debian's static busybox (nothing can be
#     pulled from the internet here);
#   - as root, the system user `wharf-task` host tasks of a root server run as.
# Tests run it through their support code (once per test process); `scripts/test.sh`
# runs it first so that its output shows in CI. Exits 3 with the reason on stderr when
# something cannot be had (not root, no apt, dockerd refuses to start): tests then skip
# and print that reason.
#
#   bash scripts/test-env.sh clean   after a test run: stops the registry and drops what
#                                    the tests pushed to it and the images they built,
#                                    and says what is left running;
#   bash scripts/test-env.sh stop    also stops the dockerd this script started.
set -euo pipefail

state="${WHARF_TEST_ENV_DIR:-/tmp/wharf-test-env}"
registry_port="${WHARF_TEST_REGISTRY_PORT:-5055}"
registry_user=wharf
registry_password=wharf-test-password
busybox_image=wharf-test/busybox:1.35
mkdir -p "$state"

say() { echo "test-env: $*" >&2; }
cannot() { say "cannot: $*"; exit 3; }

# One caller at a time: nextest runs test binaries in parallel.
exec 9>"$state/lock"
flock 9

case "${1:-}" in
  clean | stop)
    pkill -f "docker-registry serve $state/registry.yml" 2>/dev/null && say "stopped the test registry" || true
    # Everything in it was pushed by tests; the next run starts it empty.
    rm -rf "$state/registry-data"
    if docker info >/dev/null 2>&1; then
      built=$(docker images --format '{{.ID}} {{.Repository}}' | awk -v r="127.0.0.1:$registry_port/" 'index($2, r) == 1 { print $1 }' | sort -u)
      [ -z "$built" ] || { echo "$built" | xargs docker rmi -f >/dev/null 2>&1 || true; }
      [ -z "$built" ] || say "removed $(echo "$built" | wc -l) image(s) the tests built"
    fi
    if [ "$1" = stop ] && [ -f "$state/dockerd.started" ]; then
      pkill -x dockerd 2>/dev/null && say "stopped the dockerd the test environment started" || true
      rm -f "$state/dockerd.started"
    elif [ -f "$state/dockerd.started" ] && pgrep -x dockerd >/dev/null; then
      say "left running: dockerd (pid $(pgrep -x dockerd | head -1), started by the test environment, kept for the next run; stop it with: bash scripts/test-env.sh stop)"
    elif pgrep -x dockerd >/dev/null; then
      say "left running: dockerd (pid $(pgrep -x dockerd | head -1), which the test environment found running)"
    else
      say "left running: nothing the test environment started"
    fi
    exit 0
    ;;
esac

# The user a root server runs host tasks as (the server tests run as root in CI).
if [ "$(id -u)" = 0 ]; then
  bash "$(dirname "$0")/task-user.sh" wharf-task || cannot "creating the task user wharf-task failed"
fi

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q "statically linked" || need_apt+=(busybox-static)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
command -v file >/dev/null || need_apt+=(file)
command -v curl >/dev/null || need_apt+=(curl)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need_apt[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"; } >"$state/apt.log" 2>&1 ||
      cannot "apt-get install ${need_apt[*]} failed (see $state/apt.log)"
  else
    cannot "missing ${need_apt[*]}; install them, or run as root on Debian to have this script do it"
  fi
fi

# The Debian `docker` client may sit behind a newer one in /usr/local/bin; both speak
# to the socket, so use whichever is first.
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || cannot "the Docker Engine is not running and only root can start it here"
  say "starting dockerd (log: $state/dockerd.log)"
  (setsid dockerd >"$state/dockerd.log" 2>&1 9>&- &)
  touch "$state/dockerd.started"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || cannot "dockerd did not answer within 30 s (see $state/dockerd.log)"
fi

registry_url="http://127.0.0.1:$registry_port"
if ! curl -fsS -o /dev/null -u "$registry_user:$registry_password" "$registry_url/v2/" 2>/dev/null; then
  htpasswd -Bbc "$state/htpasswd" "$registry_user" "$registry_password" 2>/dev/null
  mkdir -p "$state/registry-data"
  cat >"$state/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$registry_port
auth:
  htpasswd:
    realm: wharf-test
    path: $state/htpasswd
EOF
  say "starting docker-registry on 127.0.0.1:$registry_port (log: $state/registry.log)"
  (setsid docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 9>&- &)
  for _ in $(seq 1 40); do
    curl -fsS -o /dev/null -u "$registry_user:$registry_password" "$registry_url/v2/" 2>/dev/null && break
    sleep 0.25
  done
  curl -fsS -o /dev/null -u "$registry_user:$registry_password" "$registry_url/v2/" ||
    cannot "docker-registry did not answer on $registry_url (see $state/registry.log)"
fi

if ! docker image inspect "$busybox_image" >/dev/null 2>&1; then
  say "building $busybox_image from /bin/busybox"
  ctx="$state/busybox-context"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
EOF
  docker build -q -t "$busybox_image" "$ctx" >"$state/busybox-build.log" 2>&1 ||
    cannot "building $busybox_image failed (see $state/busybox-build.log)"
fi

echo "WHARF_TEST_DOCKER=unix:///var/run/docker.sock"
echo "WHARF_TEST_REGISTRY=127.0.0.1:$registry_port"
echo "WHARF_TEST_REGISTRY_URL=$registry_url"
echo "WHARF_TEST_REGISTRY_USER=$registry_user"
echo "WHARF_TEST_REGISTRY_PASSWORD=$registry_password"
echo "WHARF_TEST_BUSYBOX_IMAGE=$busybox_image"
