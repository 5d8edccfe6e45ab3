#!/bin/sh
# greet NAME... — the tiny program the quick-start pipeline builds, tests and ships.
set -e
if [ "$#" -eq 0 ]; then
  echo "usage: greet NAME..." >&2
  exit 64
fi
for name in "$@"; do
  echo "Hello, $name!"
done
