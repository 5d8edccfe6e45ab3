#!/usr/bin/env bash
# The PostgreSQL of the store tests: Debian's `postgresql` (installed with apt-get when
# missing and this runs as root), a cluster of its own in $WHARF_TEST_ENV_DIR/pg
# (default /tmp/wharf-test-env/pg) listening on 127.0.0.1 only, on a fixed port
# (WHARF_TEST_PG_PORT, default 5433, so a system PostgreSQL on 5432 is left alone),
# started when not answering. Idempotent; prints on stdout
#   WHARF_TEST_PG_URL=postgres://wharf:…@127.0.0.1:5433   (no database: tests make their own)
#   WHARF_TEST_PG_BIN=/usr/lib/postgresql/NN/bin            (psql, to create and drop them)
# and exits 3 with the reason on stderr when it cannot (tests then skip, or fail under
# CI=true). PostgreSQL refuses to run as root: as root the cluster belongs to the
# `postgres` user the package creates. Durability is off (fsync): a test cluster.
#
#   bash scripts/pg-test-env.sh stop    stops the cluster (its data stays for the next start).
set -euo pipefail

state="${WHARF_TEST_ENV_DIR:-/tmp/wharf-test-env}"
port="${WHARF_TEST_PG_PORT:-5433}"
dir="$state/pg"
user=wharf
password=wharf-test-password
mkdir -p "$state"

say() { echo "pg-test-env: $*" >&2; }
cannot() { say "cannot: $*"; exit 3; }

# One caller at a time: nextest runs test processes in parallel.
exec 8>"$state/pg.lock"
flock 8

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  [ "$(id -u)" = 0 ] || cannot "PostgreSQL is not installed (Debian: apt-get install postgresql) and this is not root"
  command -v apt-get >/dev/null || cannot "PostgreSQL is not installed and there is no apt-get"
  say "installing postgresql"
  # The package's own cluster is not needed: no service start from the package scripts.
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
  bin=$(find_bin)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || cannot "apt-get install postgresql left no /usr/lib/postgresql/*/bin/initdb"
fi

# As root, everything of the cluster runs as `postgres`; otherwise as this user.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || cannot "no system user postgres (the Debian package creates it)"
  as_owner() { runuser -u postgres -- "$@"; }
  owner=postgres
else
  as_owner() { "$@"; }
  owner=$(id -un)
fi

if [ "${1:-}" = stop ]; then
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 && say "stopped the test cluster"
  fi
  exit 0
fi

if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    chown "$owner" "$dir"
    chmod 0700 "$dir"
    printf '%s\n' "$password" >"$dir/pwfile"
    chown "$owner" "$dir/pwfile"
    # C locale: text sorts by bytes, as SQLite sorts it.
    as_owner "$bin/initdb" -D "$dir/data" -U "$user" --pwfile="$dir/pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 --no-locale -E UTF8 >"$dir/initdb.log" 2>&1 \
      || cannot "initdb failed: $(tail -n 5 "$dir/initdb.log")"
    rm -f "$dir/pwfile"
  fi
  # 8>&-: the server must not inherit the lock, or the next caller waits for it forever.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >&2 8>&- || cannot "the test cluster did not start: $(tail -n 5 "$dir/server.log" 2>/dev/null)"
  say "started PostgreSQL ($bin) on 127.0.0.1:$port"
fi

echo "WHARF_TEST_PG_URL=postgres://$user:$password@127.0.0.1:$port"
echo "WHARF_TEST_PG_BIN=$bin"
