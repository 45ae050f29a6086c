#!/bin/sh
# Checks, in well under a second, that this machine has what the integration tests run, so that
# `npm test` stops at once with one line naming what is missing and the command that installs it,
# instead of running for minutes into timeouts and cancelled tests.
# Usage: scripts/check-prerequisites.sh           exit 1 with that line when something is missing
#        scripts/check-prerequisites.sh --packages print the Debian packages to install (may be empty)
set -u

missing=''
packages=''
# need WHAT PACKAGE: records a missing prerequisite and the Debian package that provides it.
need() {
  missing="${missing:+$missing, }$1"
  case " $packages " in *" $2 "*) ;; *) packages="${packages:+$packages }$2" ;; esac
}
has() { command -v "$1" >/dev/null 2>&1; }

# Nix 2.8 or later, as Debian 12 ships it: nix, nix-store, nix-build, nix-instantiate, nix-hash.
if has nix-store && has nix && has nix-build && has nix-instantiate && has nix-hash; then
  version=$(nix-store --version 2>/dev/null | sed -n 's/.* \([0-9][0-9.]*\)$/\1/p')
  if [ -z "$version" ] || [ "$(printf '%s\n2.8\n' "$version" | sort -V | head -n 1)" != 2.8 ]; then
    need "nix-store >= 2.8 (found ${version:-an unknown version})" nix-bin
  fi
else
  need 'nix-store >= 2.8 (and nix, nix-build, nix-instantiate, nix-hash)' nix-bin
fi
has xz || need xz xz-utils
has zstd || need zstd zstd
has bzip2 || need bzip2 bzip2
# A pseudo-terminal for the server's readable log (util-linux's script).
has script || need script bsdutils
# The dashboard tests drive Chromium: Debian's, or the one CAIRN_TEST_CHROMIUM names.
chromium=${CAIRN_TEST_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || need "chromium at $chromium" chromium
# Network namespaces and link shaping (test/helpers/netns.ts), as root.
has ip || need ip iproute2
has tc || need tc iproute2
has systemd-analyze || need 'systemd-analyze (contrib/ units)' systemd
has python3 || has plutil || need 'python3 (the launchd plist)' python3
has curl || need 'curl (docs/getting-started.md)' curl
has ps || need ps procps
# The load balancer in front of two replicas (test/helpers/nginx-process.ts): Debian's nginx.
[ -x /usr/sbin/nginx ] || need 'nginx at /usr/sbin/nginx' nginx-light
has bash || need bash bash
# A real Prometheus scrapes the server, and promtool checks /metrics and the alert rules
# (test/integration/metrics-prometheus.test.ts); the test runs the binary itself, not the service.
{ has prometheus && has promtool; } || need 'prometheus and promtool' prometheus

if [ "${1:-}" = --packages ]; then
  [ -n "$packages" ] && echo "$packages"
  exit 0
fi
if [ -n "$missing" ]; then
  echo "test: cannot run the integration tests: missing $missing; install with: apt-get install -y $packages" >&2
  exit 1
fi
# Not a package: the network-namespace tests create namespaces, which needs root.
if [ "$(id -u)" != 0 ]; then
  echo 'test: cannot run the integration tests: the network-namespace tests need root; run npm test as root' >&2
  exit 1
fi
