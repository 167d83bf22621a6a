#!/usr/bin/env bash
# Per-message cost of the WebSocket relay in kanmon, NGINX and HAProxy, measured with tools
# that do not care how loaded the machine is: instructions (valgrind --tool=callgrind) and
# system calls (strace -c -f) of the proxy's processes.
#
# Each proxy runs the ws-echo load of benches/compare.sh twice, as fresh processes, with
# ECHO_CONNS connections and MSGS_SHORT then MSGS_LONG round trips each; the difference of the
# two totals divided by the difference in round trips is the cost of one echoed message
# (client → node → client: two relayed frames), free of start-up, TLS handshakes and shutdown.
#
# - callgrind: valgrind cannot attach to a running process, so each proxy runs under it from
#   the start (compare.sh's PROXY_WRAP); valgrind runs inside the proxy's own process, so the
#   PID compare.sh stops is the proxy's. Besides the totals, the functions whose exclusive
#   instruction counts differ most between the runs (callgrind_annotate), per message.
# - strace: the proxies run as they are; compare.sh's LOAD_PROBE hook attaches
#   `strace -c -f -p PID…` (every thread; NGINX's master and workers) just before the echo
#   load and stops it (SIGINT to that strace's own PID, which detaches it and writes the
#   counts) just after. (Running the proxy under `strace -o FILE PROG` instead makes strace
#   block fatal signals — its `-I 3` default for that form — so stopping it by its PID did
#   nothing and the run stalled after its first load.)
#
# Usage: benches/profile.sh callgrind | strace
# Knobs: TARGETS ("kanmon nginx haproxy"), ECHO_CONNS (20), MSGS_SHORT (100), MSGS_LONG (600),
# TOP (functions listed per target, callgrind: 12), RUN_TIMEOUT (bound of each compare.sh run,
# 900 s), PROFILE_DIR (keep the raw tool output there; default a temporary directory).
# The kanmon binary is compare.sh's (KANMON_PROXY, or the release build in CARGO_TARGET_DIR):
# `cargo build --release -p kanmon-proxy -p kanmon-bench` first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOL="${1:-}"

# ---------------------------------------------------------------- LOAD_PROBE (strace mode)
# `profile.sh probe start|stop TARGET LOAD PID`, called by compare.sh around each measured
# load, with PROFILE_RUN_DIR set by the run below. Bounded waits; strace stopped by its PID.
if [[ "$TOOL" == probe ]]; then
  action="$2" target="$3" pid="$5"
  dir="${PROFILE_RUN_DIR:?probe: PROFILE_RUN_DIR is not set}"
  pidfile="$dir/$target.strace.pid"
  case "$action" in
    start)
      # NGINX's workers are children of its master; kanmon's and HAProxy's threads come with -f.
      pids=("$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null || true))
      args=() tasks=0
      for p in "${pids[@]}"; do
        args+=(-p "$p")
        tasks=$(( tasks + $(ls "/proc/$p/task" 2>/dev/null | wc -l) ))
      done
      strace -f -c -o "$dir/$target.strace" "${args[@]}" </dev/null >/dev/null 2>"$dir/$target.strace.log" &
      echo "$!" >"$pidfile"
      for _ in $(seq 1 100); do
        # One line per process, `Process N attached with K threads` for a multi-threaded one.
        attached=$(awk '/attached with/ { s += $(NF - 1); next } /attached/ { s++ } END { print s + 0 }' \
          "$dir/$target.strace.log")
        if (( attached >= tasks )); then exit 0; fi
        sleep 0.1
      done
      echo "probe: strace attached to fewer than $tasks threads of $target in 10 s" >&2
      exit 1 ;;
    stop)
      spid="$(cat "$pidfile")"
      kill -INT "$spid" 2>/dev/null || true
      for _ in $(seq 1 300); do
        if ! kill -0 "$spid" 2>/dev/null; then rm -f "$pidfile"; exit 0; fi
        sleep 0.1
      done
      kill -KILL "$spid" 2>/dev/null || true
      rm -f "$pidfile"
      echo "probe: strace of $target did not finish within 30 s (killed)" >&2
      exit 1 ;;
  esac
  exit 2
fi

export LC_ALL=C   # sort and join agree on the order of function names
TARGETS="${TARGETS:-kanmon nginx haproxy}"
ECHO_CONNS="${ECHO_CONNS:-20}"
MSGS_SHORT="${MSGS_SHORT:-100}"
MSGS_LONG="${MSGS_LONG:-600}"
TOP="${TOP:-12}"
RUN_TIMEOUT="${RUN_TIMEOUT:-900}"
OUT="${PROFILE_DIR:-$(mktemp -d /tmp/kanmon-profile.XXXXXX)}"
mkdir -p "$OUT"
chmod 777 "$OUT"   # NGINX workers (nobody) write their own output files

case "$TOOL" in
  callgrind)
    command -v valgrind >/dev/null || { echo "profile: valgrind is not installed" >&2; exit 2; } ;;
  strace)
    command -v strace >/dev/null || { echo "profile: strace is not installed" >&2; exit 2; } ;;
  *) echo "usage: benches/profile.sh callgrind|strace" >&2; exit 2 ;;
esac

# A strace the probe started and compare.sh did not get to stop (an interrupted run).
leftover_straces() {
  local f
  for f in "$OUT"/m*/*.strace.pid; do
    [[ -e "$f" ]] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
}
trap leftover_straces EXIT

# Calls per syscall name for target $2 in $1 (strace), as `name count` lines.
# (strace -c rows: % time, seconds, usecs/call, calls, [errors,] name.)
calls() {
  awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { print $NF, $4 }' "$1/$2.strace" 2>/dev/null || true
}

# Exclusive instructions per function for target $2 in $1 (callgrind, all its processes
# summed), as `count<TAB>function` lines.
functions() {
  local f
  for f in "$1/$2".*.cg; do
    [[ -e "$f" ]] || continue
    callgrind_annotate --threshold=100 "$f" 2>/dev/null |
      awk '$1 ~ /^[0-9,]+$/ && $0 !~ /PROGRAM TOTALS/ {
             n = $1; gsub(",", "", n); $1 = ""; sub(/^ *\([0-9.]+%\) */, ""); sub(/^ +/, "");
             sub(/ \[[^]]*\]$/, ""); print n "\t" $0 }'
  done | awk -F'\t' '{ s[$2] += $1 } END { for (k in s) print s[k] "\t" k }'
}

# Total of the tool's count for target $2 in directory $1 (instructions, or system calls).
total() {
  local dir="$1" target="$2"
  case "$TOOL" in
    callgrind) cat "$dir/$target".*.cg 2>/dev/null | awk '/^(summary|totals):/ { s += $2 } END { print s + 0 }' ;;
    strace) calls "$dir" "$target" | awk '{ s += $2 } END { print s + 0 }' ;;
  esac
}

for msgs in "$MSGS_SHORT" "$MSGS_LONG"; do
  dir="$OUT/m$msgs"
  mkdir -p "$dir"
  chmod 777 "$dir"
  echo "profile: $TOOL, $ECHO_CONNS connections x $msgs round trips" >&2
  wrap="" probe=""
  if [[ "$TOOL" == callgrind ]]; then
    wrap="valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$dir/@TARGET@.%p.cg"
  else
    probe="$ROOT/benches/profile.sh probe"
  fi
  rc=0
  TARGETS="$TARGETS" LOADS=echo ECHO_CONNS="$ECHO_CONNS" ECHO_MSGS="$msgs" START_WAIT=120 \
    LOAD_TIMEOUT=600s PROXY_WRAP="$wrap" LOAD_PROBE="$probe" PROFILE_RUN_DIR="$dir" \
    RESULTS_DIR="$dir/results" timeout -k 30 "$RUN_TIMEOUT" "$ROOT/benches/compare.sh" \
    >"$dir/compare.txt" 2>"$dir/compare.log" || rc=$?
  if (( rc != 0 )); then
    echo "profile: compare.sh ended with $rc (log: $dir/compare.log)" >&2
    tail -n 5 "$dir/compare.log" >&2
    exit 1
  fi
  if grep -q 'failed' "$dir/compare.log"; then
    echo "profile: a load or probe failed (log: $dir/compare.log)" >&2
    grep 'failed' "$dir/compare.log" >&2
    exit 1
  fi
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
  else
    functions "$OUT/m$MSGS_SHORT" "$t" | sort -t$'\t' -k2 >"$OUT/$t.short.fn"
    functions "$OUT/m$MSGS_LONG" "$t" | sort -t$'\t' -k2 >"$OUT/$t.long.fn"
    join -t$'\t' -j2 -a2 -e0 -o 0,1.1,2.1 "$OUT/$t.short.fn" "$OUT/$t.long.fn" |
      awk -F'\t' -v n="$round_trips" '{ printf "%.1f\t%s\n", ($3 - $2) / n, $1 }' |
      sort -t$'\t' -k1,1 -g -r | head -n "$TOP" |
      awk -F'\t' '{ printf "           %8.1f  %s\n", $1, substr($2, 1, 110) }'
  fi
done
echo "raw output: $OUT" >&2
