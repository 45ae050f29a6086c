#!/bin/sh
# Runs the test suite with Node's test runner through tsx. Node 20 does not expand globs
# itself, so the shell does. Usage: scripts/test.sh [unit|integration] [extra node --test flags]
set -eu
which=${1:-all}
[ $# -gt 0 ] && shift
case "$which" in
  unit) files=$(ls test/unit/*.test.ts) ;;
  integration) files=$(ls test/integration/*.test.ts 2>/dev/null || true) ;;
  all) files=$(ls test/unit/*.test.ts test/integration/*.test.ts 2>/dev/null) ;;
  *) echo "usage: scripts/test.sh [unit|integration|all]" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
exec node --import tsx --test --test-reporter=spec "$@" $files
