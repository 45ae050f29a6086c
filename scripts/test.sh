#!/bin/sh
# Runs the test suite with Node's test runner through tsx. Node 20 does not expand globs
# itself, so the shell does.
# Usage: scripts/test.sh [unit|integration|all|FILE.test.ts...] [extra node --test flags]
#
# Before the integration tests, scripts/check-prerequisites.sh stops at once when a tool they run
# is missing. After the run, scripts/check-skips.ts fails it when a test was skipped that
# test/expected-skips.txt does not list: a skip is coverage missing, not a pass.
set -eu
case "${1:-all}" in
  *.test.ts)
    # Named files: as many leading arguments as end in .test.ts.
    files=''
    while [ $# -gt 0 ]; do
      case "$1" in *.test.ts) files="$files $1"; shift ;; *) break ;; esac
    done ;;
  unit) shift; files=$(ls test/unit/*.test.ts) ;;
  integration) shift; files=$(ls test/integration/*.test.ts 2>/dev/null || true) ;;
  all) [ $# -gt 0 ] && shift; files=$(ls test/unit/*.test.ts test/integration/*.test.ts 2>/dev/null) ;;
  *) echo "usage: scripts/test.sh [unit|integration|all|FILE.test.ts...] [node --test flags]" >&2; exit 2 ;;
esac
case "$files" in *test/integration/*) sh scripts/check-prerequisites.sh ;; esac

run=sqlite
[ -n "${CAIRN_TEST_DATABASE_URL:-}" ] && run=postgres
report=$(mktemp "${TMPDIR:-/tmp}/cairn-skipped-XXXXXX")
trap 'rm -f "$report"' EXIT
# A hung test must not hang CI. Node 20 applies --test-timeout to each test file as a whole (not
# to each test in it; the file's process is killed). The slowest files of a full run (the NAR
# fuzzing, about 50 s; the netns download tests, about 40 s) stay under a minute, so 5 minutes
# leaves room for a loaded machine and still ends a hang.
code=0
# shellcheck disable=SC2086
node --import tsx --test --test-timeout=300000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=./scripts/skip-reporter.mjs --test-reporter-destination="$report" \
  "$@" $files || code=$?
node --import tsx scripts/check-skips.ts "$report" "$run" || code=1
exit "$code"
