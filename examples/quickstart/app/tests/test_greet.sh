#!/bin/sh
# Unit tests of greet.sh: each case prints ok/FAIL; the exit code is the failure count.
failures=0
check() {
  if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected '$3', got '$2'"; failures=$((failures + 1)); fi
}
check "one name" "$(sh ./greet.sh Ada)" "Hello, Ada!"
check "two names" "$(sh ./greet.sh Ada Linus | tr '\n' ' ')" "Hello, Ada! Hello, Linus! "
sh ./greet.sh >/dev/null 2>&1; check "no name is a usage error" "$?" "64"
exit "$failures"
