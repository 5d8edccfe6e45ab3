#!/usr/bin/env bash
# Creates the unprivileged user that a Wharf server running as root runs host tasks as
# (config `host_user`, default `wharf-task`), idempotently. The same command is what
# the server's error message tells an operator to run. Needs root.
set -euo pipefail
user="${1:-wharf-task}"
getent passwd "$user" >/dev/null && exit 0
[ "$(id -u)" = 0 ] || { echo "task-user: only root can create the user $user" >&2; exit 3; }
useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
echo "task-user: created the system user $user" >&2
