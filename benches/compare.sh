#!/usr/bin/env bash
# Side-by-side comparison of kanmon-proxy with NGINX and HAProxy (and a node served directly,
# the floor), measured in one run on this machine, loopback only.
#
# Usage: benches/compare.sh            (all targets)
#        TARGETS="direct nginx" benches/compare.sh
# Knobs (environment): TARGETS, LOADS ("idle connect reconnect echo echo-long rate room storm http"), ROUNDS (1; with more, the
# targets run in turn ROUNDS times and each cell is the median), CONNECTS (5000), CONNECT_CONCURRENCY (64), ECHO_CONNS (100),
# ECHO_MSGS (200), ECHO_SIZE (64), IDLE_CONNS (9000), IDLE_HOLD (5s), HTTP_CONNS (64),
# HTTP_DURATION (5s), ECHO_LONG_MSGS (2000), RATE_CONNS (2000), RATE (20 msgs/s per connection),
# RATE_DURATION (5s per step), RATE_STEPS (5: search for the highest rate with p99 under
# RATE_SLO, 5ms), ROOM_SIZE (8), STORM_CLIENTS (5000), STORM_RETRIES (3: a client whose reconnect
# failed tries again, after STORM_RETRY_BACKOFF, 250ms, doubling, jittered), KANMON_PROXY (path of the proxy binary), RESULTS_DIR (keep JSON results),
# H2_CONNS (h2 connections the `kanmon-h2` target's WebSockets share; default IDLE_CONNS / 100),
# CARGO_TARGET_DIR (where kanmon-bench is built), PROXY_WRAP (a command the proxies run under,
# e.g. `strace -c -f -o /tmp/@TARGET@.strace`; @TARGET@ becomes the target's name: see
# benches/profile.sh), START_WAIT (seconds a proxy may take to open its port, 10), SKIP_BUILD
# (1: use the kanmon-bench already built in CARGO_TARGET_DIR), FLEET_DEPLOYMENTS (1000: the
# deployments of the `kanmon-fleet` target), LOAD_PROBE (a command run as
# `LOAD_PROBE start|stop TARGET LOAD PID` just before and after each measured load, e.g. to
# attach strace to the proxy for the load only: see benches/profile.sh).
#
# Per-load tables and progress go to stderr; stdout gets the one comparison table.
# Every process it starts is killed on exit; every load is bounded by --timeout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGETS="${TARGETS:-direct kanmon nginx haproxy}"
# `kanmon-h2` (not in the default set): kanmon again, its WebSocket loads as RFC 8441 streams.
# `kanmon-noadm` (not in the default set): kanmon with handshake admission off.
# `kanmon-fleet` (not in the default set): kanmon routing FLEET_DEPLOYMENTS (1000) deployments,
# the WebSocket loads spread over all of them (`--spread`); meant for `idle`.
LOADS="${LOADS:-idle connect reconnect echo echo-long rate room storm http}"
ROUNDS="${ROUNDS:-1}"
CONNECTS="${CONNECTS:-5000}"
CONNECT_CONCURRENCY="${CONNECT_CONCURRENCY:-64}"
ECHO_CONNS="${ECHO_CONNS:-100}"
ECHO_MSGS="${ECHO_MSGS:-200}"
ECHO_SIZE="${ECHO_SIZE:-64}"
IDLE_CONNS="${IDLE_CONNS:-9000}"
IDLE_HOLD="${IDLE_HOLD:-5s}"
HTTP_CONNS="${HTTP_CONNS:-64}"
HTTP_DURATION="${HTTP_DURATION:-5s}"
ECHO_LONG_MSGS="${ECHO_LONG_MSGS:-2000}"
RATE_CONNS="${RATE_CONNS:-2000}"
RATE="${RATE:-20}"
RATE_DURATION="${RATE_DURATION:-5s}"
RATE_STEPS="${RATE_STEPS:-5}"
RATE_SLO="${RATE_SLO:-5ms}"
ROOM_SIZE="${ROOM_SIZE:-8}"
STORM_CLIENTS="${STORM_CLIENTS:-5000}"
STORM_ARGS=(--retries "${STORM_RETRIES:-3}" --retry-backoff "${STORM_RETRY_BACKOFF:-250ms}")
LOAD_TIMEOUT="${LOAD_TIMEOUT:-60s}"
# Client flags of the WebSocket loads (set by the kanmon-h2 target).
WS_ARGS=()
if [[ -z "${KANMON_PROXY:-}" ]]; then
  KANMON_PROXY="$ROOT/target/release/kanmon-proxy"
  if [[ ! -x "$KANMON_PROXY" && -n "${CARGO_TARGET_DIR:-}" ]]; then
    KANMON_PROXY="$CARGO_TARGET_DIR/release/kanmon-proxy"
  fi
fi
HOST="alpha.us-east1.kanmon.test"

# Fixed loopback ports for the proxies (the nodes take OS-chosen ports).
PORT_KANMON=18443
PORT_KANMON_ADMIN=19100
PORT_NGINX=18444
PORT_HAPROXY=18445

log() { echo "compare: $*" >&2; }

# The PROXY_WRAP prefix for target $1, as words (empty: run the proxy as it is).
wrap() {
  local w="${PROXY_WRAP:-}"
  WRAP=()
  if [[ -n "$w" ]]; then read -r -a WRAP <<<"${w//@TARGET@/$1}"; fi
}

WORK="$(mktemp -d /tmp/kanmon-compare.XXXXXX)"
chmod 755 "$WORK"   # NGINX workers run as nobody
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "${RESULTS_DIR:-}" && -d "$WORK/results" ]]; then
    mkdir -p "$RESULTS_DIR" && cp -r "$WORK"/results/. "$RESULTS_DIR"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process we started (and forgets it).
stop() {
  local pid="$1" p keep=()
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do
    if [[ "$p" != "$pid" ]]; then keep+=("$p"); fi
  done
  PIDS=("${keep[@]}")
}

# Fails when something already listens on a port (a stale proxy would be measured instead).
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    log "port $1 is already in use: stop what listens there first"
    return 1
  fi
}

# Waits (bounded) until a TCP port accepts connections.
wait_port() {
  local port="$1" i
  for i in $(seq 1 $(( ${START_WAIT:-10} * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "port $port did not open within ${START_WAIT:-10}s"
  return 1
}

# Waits (bounded) for a node's first line `listening on ADDR` and prints ADDR.
node_addr() {
  local out="$1" i line
  for i in $(seq 1 100); do
    line="$(head -n1 "$out" 2>/dev/null || true)"
    if [[ "$line" == "listening on "* ]]; then echo "${line#listening on }"; return 0; fi
    sleep 0.1
  done
  log "node did not report its address: $(cat "$out")"
  return 1
}

ensure_pkg() {
  local bin="$1" pkg="$2"
  if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$bin" ]]; then
    log "installing $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null 2>&1
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    }
  fi
}

# ---------------------------------------------------------------- build and common set-up
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building kanmon-bench (release)"
  (cd "$ROOT" && cargo build --release -q -p kanmon-bench)
fi
BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/kanmon-bench"
ulimit -n "$(ulimit -Hn)" || true
# A proxy holds two descriptors per idle connection: stay below half the hard limit.
HARD_NOFILE="$(ulimit -Hn)"
if [[ "$HARD_NOFILE" != unlimited ]] && (( IDLE_CONNS > (HARD_NOFILE - 1000) / 2 )); then
  IDLE_CONNS=$(( (HARD_NOFILE - 1000) / 2 ))
  log "open-files hard limit $HARD_NOFILE: holding $IDLE_CONNS idle connections"
fi

mkdir -p "$WORK/certs" "$WORK/results"
"$BENCH" certs --dir "$WORK/certs" --hosts "$HOST,*.us-east1.kanmon.test" >/dev/null
CA="$WORK/certs/ca.crt"
CERT="$WORK/certs/$HOST.crt"
KEY="$WORK/certs/$HOST.key"

# Starts a node in the background (not in a subshell, so its PID is tracked for clean-up);
# sets NODE_ADDR and NODE_PID.
start_node() {
  local id="$1"; shift
  local out="$WORK/$id.out"
  "$BENCH" node --listen 127.0.0.1:0 --node-id "$id" --quiet "$@" >"$out" 2>"$WORK/$id.err" &
  NODE_PID="$!"
  PIDS+=("$NODE_PID")
  NODE_ADDR="$(node_addr "$out")"
}

start_node alpha-0 --grpc-listen 127.0.0.1:0
NODE0="$NODE_ADDR"
NODE0_PID="$NODE_PID"
start_node alpha-1 --grpc-listen 127.0.0.1:0
NODE1="$NODE_ADDR"
NODE1_PID="$NODE_PID"
GRPC0="$(sed -n 's/^grpc listening on //p' "$WORK/alpha-0.out")"
GRPC1="$(sed -n 's/^grpc listening on //p' "$WORK/alpha-1.out")"
log "nodes: alpha-0 $NODE0 (grpc $GRPC0), alpha-1 $NODE1 (grpc $GRPC1)"

# ---------------------------------------------------------------- the four loads
run_loads() {
  local name="$1" port="$2" pid="$3"
  local out="$WORK/results/r$ROUND"
  mkdir -p "$out"
  local common=(--connect "127.0.0.1:$port" --ca "$CA" --timeout "$LOAD_TIMEOUT" "${WS_ARGS[@]}")
  local ws="wss://$HOST:$port/ws"
  # Other work on the machine skews every number: say how busy it was.
  log "[$name] load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  # Idle first, on a fresh process: its RSS baseline is not inflated by earlier loads.
  if want idle; then
  log "[$name] ws-idle $IDLE_CONNS held $IDLE_HOLD (pid $pid)"
  "$BENCH" ws-idle --url "$ws" "${common[@]}" -n "$IDLE_CONNS" --hold "$IDLE_HOLD" --pid "$pid" \
    --out "$out/$name.ws-idle.json" >&2 || log "[$name] ws-idle failed"
  fi
  if want connect; then
  log "[$name] ws-connect $CONNECTS x $CONNECT_CONCURRENCY in flight"
  measured ws-connect "$BENCH" ws-connect --url "$ws" "${common[@]}" -n "$CONNECTS" \
    -c "$CONNECT_CONCURRENCY" --out "$out/$name.ws-connect.json" >&2 || log "[$name] ws-connect failed"
  fi
  if want reconnect && (( ${#WS_ARGS[@]} == 0 )); then
  # The same crowd coming back: each in-flight slot is one client that keeps its TLS session,
  # so all but its first connection resume with the ticket the proxy sent.
  log "[$name] ws-connect --resume $CONNECTS x $CONNECT_CONCURRENCY in flight"
  measured ws-reconnect "$BENCH" ws-connect --resume --url "$ws" "${common[@]}" -n "$CONNECTS" \
    -c "$CONNECT_CONCURRENCY" --out "$out/$name.ws-reconnect.json" >&2 || log "[$name] ws-connect --resume failed"
  fi
  if want echo; then
  log "[$name] ws-echo $ECHO_CONNS x $ECHO_MSGS x ${ECHO_SIZE}B"
  measured ws-echo "$BENCH" ws-echo --url "$ws" "${common[@]}" -c "$ECHO_CONNS" -m "$ECHO_MSGS" \
    -b "$ECHO_SIZE" --out "$out/$name.ws-echo.json" >&2 || log "[$name] ws-echo failed"
  fi
  if want echo-long; then
  log "[$name] ws-echo $ECHO_CONNS x $ECHO_LONG_MSGS x ${ECHO_SIZE}B"
  measured ws-echo-long "$BENCH" ws-echo --url "$ws" "${common[@]}" -c "$ECHO_CONNS" -m "$ECHO_LONG_MSGS" \
    -b "$ECHO_SIZE" --out "$out/$name.ws-echo-long.json" >&2 || log "[$name] ws-echo (long) failed"
  fi
  if want rate; then
  # Open loop at a game's rate, then up/down in steps to the highest rate with p99 < RATE_SLO.
  log "[$name] ws-rate $RATE_CONNS x $RATE/s, $RATE_STEPS steps of $RATE_DURATION"
  measured ws-rate "$BENCH" ws-rate --url "$ws" "${common[@]}" -c "$RATE_CONNS" -r "$RATE" \
    -b "$ECHO_SIZE" -d "$RATE_DURATION" --steps "$RATE_STEPS" --slo-p99 "$RATE_SLO" \
    --out "$out/$name.ws-rate.json" >&2 || log "[$name] ws-rate failed"
  fi
  if want room; then
  log "[$name] ws-rate $RATE_CONNS x $RATE/s in rooms of $ROOM_SIZE"
  measured ws-room "$BENCH" ws-rate --url "$ws" "${common[@]}" -c "$RATE_CONNS" -r "$RATE" \
    -b "$ECHO_SIZE" -d "$RATE_DURATION" --room "$ROOM_SIZE" \
    --out "$out/$name.ws-room.json" >&2 || log "[$name] ws-rate --room failed"
  fi
  if want storm && (( ${#WS_ARGS[@]} == 0 )); then
  # All clients lose their connection at once and come back together: full handshakes, then
  # each client resuming the TLS session of its first connection.
  log "[$name] ws-storm $STORM_CLIENTS clients"
  measured ws-storm "$BENCH" ws-storm --url "$ws" "${common[@]}" -c "$STORM_CLIENTS" "${STORM_ARGS[@]}" \
    --out "$out/$name.ws-storm.json" >&2 || log "[$name] ws-storm failed"
  log "[$name] ws-storm $STORM_CLIENTS clients, resuming"
  measured ws-storm-resume "$BENCH" ws-storm --resume --url "$ws" "${common[@]}" -c "$STORM_CLIENTS" "${STORM_ARGS[@]}" \
    --out "$out/$name.ws-storm-resume.json" >&2 || log "[$name] ws-storm --resume failed"
  fi
  if want http && (( ${#WS_ARGS[@]} == 0 )); then
  log "[$name] http $HTTP_CONNS connections for $HTTP_DURATION"
  measured http "$BENCH" http --url "https://$HOST:$port/v2/healthcheck" "${common[@]}" \
    -c "$HTTP_CONNS" -d "$HTTP_DURATION" --out "$out/$name.http.json" >&2 || log "[$name] http failed"
  fi
}

# CPU seconds used so far by process $1 and its children (NGINX's workers are children of its
# master; kanmon and HAProxy are one process with threads): user + system, or with $2 = sys
# the system (kernel) part alone.
cpu_seconds() {
  local pid="$1" part="${2:-all}" ticks=0 p
  for p in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    if [[ -r "/proc/$p/stat" ]]; then
      # Fields 14 and 15 (utime, stime), counted after the ")" that ends the command name.
      ticks=$(( ticks + $(sed 's/.*) //' "/proc/$p/stat" | awk -v part="$part" \
        '{ print (part == "sys") ? $13 : $12 + $13 }') ))
    fi
  done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f\n", t / hz }'
}

# CPU seconds of the finished children of shell $1 (the load generators run in the foreground
# and are waited for, so their user + system time lands in fields 16 and 17 of its stat) plus
# what the two nodes have used so far.
others_cpu_seconds() {
  local ticks
  ticks=$(sed 's/.*) //' "/proc/$1/stat" | awk '{ print $14 + $15 }')
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n0="$(cpu_seconds "$NODE0_PID")" \
    -v n1="$(cpu_seconds "$NODE1_PID")" 'BEGIN { printf "%.3f\n", t / hz + n0 + n1 }'
}

# Runs a load (the rest of the arguments) and writes the CPU spent meanwhile, so the table can
# show CPU per unit of work next to the rates: the proxy's to $out/$name.$load.cpu, its kernel
# part to .syscpu, and the load generator's and the nodes' together to .othercpu (on a shared
# machine their share bounds what a cheaper proxy can do to any rate).
measured() {
  local load="$1"; shift
  local before sys_before others_before rc=0 shell="$BASHPID"
  probe start "$name" "$load" "$pid"
  before="$(cpu_seconds "$pid")"
  sys_before="$(cpu_seconds "$pid" sys)"
  others_before="$(others_cpu_seconds "$shell")"
  "$@" || rc=$?
  probe stop "$name" "$load" "$pid"
  delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a - b }'; }
  delta "$(cpu_seconds "$pid")" "$before" >"$out/$name.$load.cpu"
  delta "$(cpu_seconds "$pid" sys)" "$sys_before" >"$out/$name.$load.syscpu"
  delta "$(others_cpu_seconds "$shell")" "$others_before" >"$out/$name.$load.othercpu"
  return "$rc"
}

# Runs LOAD_PROBE (when set) with the arguments; a failing probe is reported, not fatal.
probe() {
  local p=()
  if [[ -n "${LOAD_PROBE:-}" ]]; then read -r -a p <<<"$LOAD_PROBE"; fi
  if (( ${#p[@]} > 0 )); then "${p[@]}" "$@" || log "load probe $1 $2 $3 failed"; fi
}

# True when LOADS names this load.
want() { [[ " $LOADS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- targets
target_direct() {
  start_node direct --tls-cert "$CERT" --tls-key "$KEY"
  local pid="$NODE_PID" port="${NODE_ADDR##*:}"
  run_loads direct "$port" "$pid"
  stop "$pid"
}

target_kanmon() { kanmon_as kanmon; }

# The same proxy with every WebSocket as an extended CONNECT stream over shared h2 connections
# (at most 100 streams each); reconnects (TLS resumption) and plain HTTP do not apply.
target_kanmon-h2() {
  WS_ARGS=(--h2 --h2-connections "${H2_CONNS:-$(( (IDLE_CONNS + 99) / 100 ))}")
  kanmon_as kanmon-h2
  WS_ARGS=()
}

# kanmon with every handshake started at once (no handshake queue), to set against `kanmon`.
target_kanmon-noadm() {
  local extra="${KANMON_SERVER_EXTRA:-}"
  KANMON_SERVER_EXTRA="$extra"$'\n[limits]\nmax_handshakes_in_progress = 0'
  kanmon_as kanmon-noadm
  KANMON_SERVER_EXTRA="$extra"
}

# kanmon with FLEET_DEPLOYMENTS (default 1000) deployments alpha-0 … alpha-(N-1) in us-east1,
# each with the two demo nodes under node ids of its own (alpha-K-0, alpha-K-1), served by one
# wildcard certificate, and the WebSocket loads spread over all of them (`--spread N`: the i-th
# connection goes to alpha-(i mod N)), so "KiB per idle WebSocket" shows kanmon at one deployment
# and at N side by side. Only `idle` is meant for it: connect, echo and rate run spread the
# same way (their figures are not what this target is for); reconnect, storm and http are skipped.
target_kanmon-fleet() {
  local n="${FLEET_DEPLOYMENTS:-1000}" k
  if [[ ! "$n" =~ ^[1-9][0-9]*$ ]]; then
    log "FLEET_DEPLOYMENTS must be a whole number of at least 1, not \"$n\""; exit 2
  fi
  mkdir -p "$WORK/kanmon-fleet/certs"
  cp "$WORK/certs/_.us-east1.kanmon.test.crt" "$WORK/certs/_.us-east1.kanmon.test.key" \
    "$WORK/kanmon-fleet/certs/"
  for (( k = 0; k < n; k++ )); do
    printf '[[deployment]]\ninstance = "alpha-%d"\nzone = "us-east1"\nnodes = [\n' "$k"
    printf '  { id = "alpha-%d-0", addr = "%s", grpc = "%s", state = "ready" },\n' "$k" "$NODE0" "$GRPC0"
    printf '  { id = "alpha-%d-1", addr = "%s", grpc = "%s", state = "ready" },\n]\n' "$k" "$NODE1" "$GRPC1"
  done >"$WORK/fleet-nodes.toml"
  log "[kanmon-fleet] $n deployments, $(( 2 * n )) node entries"
  WS_ARGS=(--spread "$n")
  FLEET_NODES="$WORK/fleet-nodes.toml"
  kanmon_as kanmon-fleet
  WS_ARGS=()
  FLEET_NODES=""
}

# Starts kanmon-proxy and runs the loads as target $1.
kanmon_as() {
  local target="$1"
  if [[ ! -x "$KANMON_PROXY" ]]; then
    log "[$target] skipped: $KANMON_PROXY not found (cargo build --release -p kanmon-proxy)"
    return 0
  fi
  local dir="$WORK/$target"
  mkdir -p "$dir/certs"
  cp "$CERT" "$KEY" "$dir/certs/"
  cat >"$dir/nodes.toml" <<EOF
[[deployment]]
instance = "alpha"
zone = "us-east1"
nodes = [
  { id = "alpha-0", addr = "$NODE0", grpc = "$GRPC0", state = "ready" },
  { id = "alpha-1", addr = "$NODE1", grpc = "$GRPC1", state = "ready" },
]
EOF
  if [[ -n "${FLEET_NODES:-}" ]]; then cp "$FLEET_NODES" "$dir/nodes.toml"; fi
  cat >"$dir/kanmon.toml" <<EOF
[listen]
tls = "127.0.0.1:$PORT_KANMON"
admin = "127.0.0.1:$PORT_KANMON_ADMIN"

[tls]
cert_dir = "$dir/certs"

[routing]
base_domain = "kanmon.test"

[discovery]
kind = "file"
path = "$dir/nodes.toml"

[shutdown]
grace_period = "1s"
upgrade_sock = "$dir/upgrade.sock"

[server]
threads = ${KANMON_THREADS:-2}
${KANMON_SERVER_EXTRA:-}
EOF
  port_free "$PORT_KANMON" && port_free "$PORT_KANMON_ADMIN" || exit 1
  wrap "$target"
  "${WRAP[@]}" "$KANMON_PROXY" --config "$dir/kanmon.toml" >"$dir/out.log" 2>&1 &
  local pid="$!"
  PIDS+=("$pid")
  if ! wait_port "$PORT_KANMON"; then
    log "[$target] skipped: proxy did not start; last log lines:"; tail -n 20 "$dir/out.log" >&2
    stop "$pid"; return 0
  fi
  run_loads "$target" "$PORT_KANMON" "$pid"
  stop "$pid"
}

target_nginx() {
  ensure_pkg nginx nginx
  local dir="$WORK/nginx"
  mkdir -p "$dir/tmp" "$dir/logs"
  chmod 777 "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 2;
worker_rlimit_nofile 19500;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 19000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000;
  upstream nodes {
    server $NODE0;
    server $NODE1;
    keepalive 64;
    keepalive_requests 1000000;
  }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$PORT_NGINX ssl;
    server_name $HOST;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://nodes;
      proxy_http_version 1.1;
      proxy_set_header Host \$host;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
EOF
  port_free "$PORT_NGINX" || exit 1
  wrap nginx
  "${WRAP[@]}" nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/logs/out.log" 2>&1 &
  local pid="$!"
  PIDS+=("$pid")
  if ! wait_port "$PORT_NGINX"; then
    log "[nginx] did not start:"; cat "$dir/logs/out.log" "$dir/logs/error.log" >&2
    stop "$pid"; return 0
  fi
  run_loads nginx "$PORT_NGINX" "$pid"
  stop "$pid"
}

target_haproxy() {
  ensure_pkg haproxy haproxy
  local dir="$WORK/haproxy"
  mkdir -p "$dir"
  cat "$CERT" "$KEY" >"$dir/$HOST.pem"
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 9500
  tune.ssl.default-dh-param 2048

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  timeout http-keep-alive 60s

frontend fe
  bind 127.0.0.1:$PORT_HAPROXY ssl crt $dir/$HOST.pem alpn http/1.1
  default_backend nodes

backend nodes
  balance roundrobin
  http-reuse always
  server alpha-0 $NODE0
  server alpha-1 $NODE1
EOF
  port_free "$PORT_HAPROXY" || exit 1
  wrap haproxy
  "${WRAP[@]}" haproxy -db -f "$dir/haproxy.cfg" >"$dir/out.log" 2>&1 &
  local pid="$!"
  PIDS+=("$pid")
  if ! wait_port "$PORT_HAPROXY"; then
    log "[haproxy] did not start:"; cat "$dir/out.log" >&2
    stop "$pid"; return 0
  fi
  run_loads haproxy "$PORT_HAPROXY" "$pid"
  stop "$pid"
}

STARTED=$SECONDS
for ROUND in $(seq 1 "$ROUNDS"); do
  (( ROUNDS > 1 )) && log "round $ROUND of $ROUNDS"
  for t in $TARGETS; do
    case "$t" in
      direct | kanmon | kanmon-h2 | kanmon-noadm | kanmon-fleet | nginx | haproxy) "target_$t" ;;
      *) log "unknown target $t (direct, kanmon, kanmon-h2, kanmon-noadm, kanmon-fleet, nginx, haproxy)"; exit 2 ;;
    esac
  done
done

echo
echo "kanmon comparison, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, loopback, TLS 1.3 ECDSA P-256, full handshakes (reconnects: resumed)"
echo "ws-connect $CONNECTS x $CONNECT_CONCURRENCY in flight; ws-echo $ECHO_CONNS x $ECHO_MSGS (long: $ECHO_LONG_MSGS) x ${ECHO_SIZE}B;" \
  "ws-rate $RATE_CONNS x $RATE/s for $RATE_DURATION ($RATE_STEPS search steps, p99 < $RATE_SLO), rooms of $ROOM_SIZE; ws-storm $STORM_CLIENTS clients;" \
  "ws-idle $IDLE_CONNS held $IDLE_HOLD; http $HTTP_CONNS keep-alive connections for $HTTP_DURATION"
echo
"$BENCH" compare-table --dir "$WORK/results" --targets "$(echo $TARGETS | tr ' ' ',')" --baseline nginx
echo
log "done in $((SECONDS - STARTED))s"
