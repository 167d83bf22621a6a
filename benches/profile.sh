#!/usr/bin/env bash
# Per-message cost of the WebSocket relay in kanmon, NGINX and HAProxy, measured with tools
# that do not care how loaded the machine is: instructions (valgrind --tool=callgrind) and
# system calls (strace -c -f) of the proxy's processes.
#
# Each proxy runs the ws-echo load of benches/compare.sh twice, as fresh processes under the
# tool, with ECHO_CONNS connections and MSGS_SHORT then MSGS_LONG round trips each; the
# difference of the two totals divided by the difference in round trips is the cost of one
# echoed message (client → node → client: two relayed frames), free of start-up, TLS
# handshakes and shutdown.
#
# Known gap (2026-12-02): under `strace -f` the PID compare.sh stops is strace's, and the first
# run stalled after its load (stopped by an outer bound); valgrind runs in the proxy's own
# process, so callgrind mode should not have that problem, but no full run of either mode has
# completed yet.
#
# Usage: benches/profile.sh callgrind | strace
# Knobs: TARGETS ("kanmon nginx haproxy"), ECHO_CONNS (20), MSGS_SHORT (100), MSGS_LONG (600),
# PROFILE_DIR (keep the raw tool output there; default a temporary directory).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOL="${1:-}"
TARGETS="${TARGETS:-kanmon nginx haproxy}"
ECHO_CONNS="${ECHO_CONNS:-20}"
MSGS_SHORT="${MSGS_SHORT:-100}"
MSGS_LONG="${MSGS_LONG:-600}"
OUT="${PROFILE_DIR:-$(mktemp -d /tmp/kanmon-profile.XXXXXX)}"
mkdir -p "$OUT"
chmod 777 "$OUT"   # NGINX workers (nobody) write their own output files

case "$TOOL" in
  callgrind)
    command -v valgrind >/dev/null || { echo "profile: valgrind is not installed" >&2; exit 2; }
    wrap_for() { echo "valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$1/@TARGET@.%p.cg"; } ;;
  strace)
    command -v strace >/dev/null || { echo "profile: strace is not installed" >&2; exit 2; }
    wrap_for() { echo "strace -f -c -o $1/@TARGET@.strace"; } ;;
  *) echo "usage: benches/profile.sh callgrind|strace" >&2; exit 2 ;;
esac

# Total of the tool's count for target $2 in directory $1 (instructions, or system calls).
total() {
  local dir="$1" target="$2"
  case "$TOOL" in
    callgrind) cat "$dir/$target".*.cg 2>/dev/null | awk '/^(summary|totals):/ { s += $2 } END { print s + 0 }' ;;
    strace) calls "$dir" "$target" | awk '{ s += $2 } END { print s + 0 }' ;;
  esac
}

# Calls per syscall name for target $2 in $1 (strace only), as `name count` lines.
# (strace -c rows: % time, seconds, usecs/call, calls, [errors,] name.)
calls() {
  awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { print $NF, $4 }' "$1/$2.strace" 2>/dev/null || true
}

for msgs in "$MSGS_SHORT" "$MSGS_LONG"; do
  dir="$OUT/m$msgs"
  mkdir -p "$dir"
  chmod 777 "$dir"
  echo "profile: $TOOL, $ECHO_CONNS connections x $msgs round trips" >&2
  TARGETS="$TARGETS" LOADS=echo ECHO_CONNS="$ECHO_CONNS" ECHO_MSGS="$msgs" START_WAIT=120 \
    LOAD_TIMEOUT=600s PROXY_WRAP="$(wrap_for "$dir")" RESULTS_DIR="$dir/results" \
    "$ROOT/benches/compare.sh" >"$dir/compare.txt"
done

round_trips=$(( ECHO_CONNS * (MSGS_LONG - MSGS_SHORT) ))
unit=$([[ "$TOOL" == callgrind ]] && echo "instructions" || echo "system calls")
echo "$unit per echoed WebSocket message (client -> node -> client), $ECHO_CONNS x ($MSGS_LONG - $MSGS_SHORT) round trips:"
for t in $TARGETS; do
  a="$(total "$OUT/m$MSGS_SHORT" "$t")"
  b="$(total "$OUT/m$MSGS_LONG" "$t")"
  awk -v t="$t" -v a="$a" -v b="$b" -v n="$round_trips" \
    'BEGIN { printf "  %-8s %10.1f   (totals %d and %d)\n", t, (b - a) / n, a, b }'
  if [[ "$TOOL" == strace ]]; then
    join <(calls "$OUT/m$MSGS_SHORT" "$t" | sort) <(calls "$OUT/m$MSGS_LONG" "$t" | sort) |
      awk -v n="$round_trips" '{ d = ($3 - $2) / n; if (d >= 0.05) printf "           %-16s %6.2f\n", $1, d }'
  fi
done
echo "raw output: $OUT" >&2
