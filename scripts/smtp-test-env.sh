#!/usr/bin/env bash
# The SMTP test server of the notification tests: Python's aiosmtpd (Debian package
# python3-aiosmtpd). Installs it with apt-get when missing and this runs as root;
# prints WHARF_TEST_SMTP_PYTHON=<python3> when `import aiosmtpd` works, else says why
# on stderr and exits 1. The tests start the server themselves (on 127.0.0.1).
set -euo pipefail
# The Debian package installs for the system's python3 (/usr/bin), which a python3
# earlier on PATH (pyenv, a venv) does not see: the first that imports it wins.
find_python() {
  for candidate in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import aiosmtpd' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
if ! find_python >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing python3-aiosmtpd" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-aiosmtpd >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-aiosmtpd >&2; }
  fi
fi
if ! python=$(find_python); then
  echo "python3 cannot import aiosmtpd (install the Debian package python3-aiosmtpd, or pip install aiosmtpd)" >&2
  exit 1
fi
echo "WHARF_TEST_SMTP_PYTHON=$python"
