#!/usr/bin/env bash
# Installs the system packages kanmon needs on a Debian machine that has only Rust.
# Usage: scripts/setup.sh [run|test|bench]   (default: test)
#   run   – what `kanmon up` needs: cmake (pingora's build), PostgreSQL (deployment databases)
#   test  – the above plus promtool (metrics format checks), pebble + pebble-challtestsrv (ACME
#           tests) and kubectl (manifest checks, if packaged); from PyPI, aiosmtpd (the SMTP
#           sink of the notification tests)
#   bench – the above plus nginx, haproxy, wrk and h2load for the comparison
set -euo pipefail
what="${1:-test}"

pkgs=(cmake pkg-config postgresql)
case "$what" in
  run) ;;
  test) pkgs+=(prometheus pebble) ;;
  bench) pkgs+=(prometheus pebble nginx haproxy wrk nghttp2-client) ;;
  *) echo "usage: $0 [run|test|bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# kubectl checks the Kubernetes driver's objects (`kubectl apply --dry-run=client`): installed
# where the machine's package sources carry it (Debian's own do not).
if [ "$what" != run ] && ! command -v kubectl >/dev/null 2>&1 \
  && apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  missing+=(kubectl)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  # The prometheus package would start a service; we only need promtool, so keep it from starting.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The notification tests start Python's aiosmtpd on loopback as their SMTP sink.
if [ "$what" != run ] && ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "setup: installing aiosmtpd (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2'
fi
# The postgresql package may start a cluster on port 5432; kanmon runs its own per deployment
# (initdb in its data dir), so nothing here depends on that service.
echo "setup: ok ($what)" >&2
