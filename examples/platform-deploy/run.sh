#!/usr/bin/env bash
# Best practice 5.4 end to end on this machine, one command: dockerd and the tools image
# (scripts/test-env.sh), a real SMTP server (Python's aiosmtpd, scripts/smtp-test-env.sh)
# on 127.0.0.1, a Wharf server whose [smtp] settings point at it, and a run of
# examples/platform-deploy/pipeline.yaml: a long-running deploy script in the tools
# image, then the e-mail with the result, printed here as the SMTP server received it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

eval "$(bash scripts/test-env.sh | grep '^WHARF_TEST_')"
eval "$(bash scripts/smtp-test-env.sh | grep '^WHARF_TEST_SMTP_PYTHON=')"
echo "==> building wharf"
cargo build --quiet -p wharf
wharf="$root/target/debug/wharf"

work=$(mktemp -d)
chmod o+x "$work"
server_pid=
smtp_pid=
cleanup() {
  status=$?
  if [ "$status" != 0 ] && [ -f "$work/server.log" ]; then
    echo "==> the server's log (last 20 lines)" >&2
    tail -n 20 "$work/server.log" >&2
  fi
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  [ -n "$smtp_pid" ] && kill "$smtp_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
smtp_port=$(free_port)
# aiosmtpd's Debugging handler prints every message it receives.
"$WHARF_TEST_SMTP_PYTHON" -u -m aiosmtpd -n -c aiosmtpd.handlers.Debugging -l "127.0.0.1:$smtp_port" >"$work/mail.txt" 2>&1 &
smtp_pid=$!

port=$(free_port)
export WHARF_SERVER="http://127.0.0.1:$port" WHARF_TOKEN=example-token
WHARF_ADMIN_TOKEN=$WHARF_TOKEN "$wharf" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --smtp-host 127.0.0.1 --smtp-port "$smtp_port" --smtp-security none --smtp-from wharf@localhost \
  >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -fsS "$WHARF_SERVER/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

"$wharf" pipelines apply examples/platform-deploy/pipeline.yaml
echo "==> wharf runs start platform-deploy --follow"
"$wharf" runs start platform-deploy -p "TOOLS=$WHARF_TEST_BUSYBOX_IMAGE" -p ENVIRONMENT=production --follow

echo "==> the e-mail the SMTP server on 127.0.0.1:$smtp_port received"
for _ in $(seq 100); do grep -q '^Subject:' "$work/mail.txt" 2>/dev/null && break; sleep 0.1; done
if ! grep -q '^Subject:' "$work/mail.txt"; then
  echo "no e-mail arrived; the SMTP server printed:" >&2
  cat "$work/mail.txt" >&2
  exit 1
fi
sleep 0.5
sed -n '/^---------- MESSAGE FOLLOWS ----------/,/^------------ END MESSAGE ------------/p' "$work/mail.txt"
