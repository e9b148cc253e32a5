#!/usr/bin/env bash
# Starts the whole Waypost suite on localhost with embedded defaults (no external service):
#   - dht-node    : a DHT bootstrap node (UDP), a local network until you configure bootstrap nodes
#   - dht-proxy   : the OpenDHT REST proxy (HTTP), on its own DHT node bootstrapped from dht-node
#   - turn-server : TURN over UDP and TCP with Jami's default credentials ring/ring
#   - nameserver  : the Jami name server with its embedded (redb) store
# prints the endpoints and a ready-to-paste node-client example, and stops every server it
# started (by PID) on Ctrl-C. A server whose binary is not implemented yet is reported and skipped.
#
# Environment (all optional):
#   WAYPOST_START_PROFILE   debug (default) or release
#   WAYPOST_START_DATA      state directory (default: target/waypost-local)
#   WAYPOST_START_DHT_PORT  DHT bootstrap node UDP port (default 4222)
#   WAYPOST_START_PROXY_PORT, WAYPOST_START_PROXY_DHT_PORT  proxy HTTP / its DHT UDP (8080 / 4223)
#   WAYPOST_START_TURN_PORT TURN UDP+TCP port (default 3478)
#   WAYPOST_START_NS_PORT   name server HTTP port (default 8081)
#   WAYPOST_START_NO_BUILD  set: use the binaries already in the target dir, do not run cargo
#                           (the test suite sets it: a build here would swap binaries that other
#                           tests, built with other features, are running)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PROFILE=${WAYPOST_START_PROFILE:-debug}
DATA=${WAYPOST_START_DATA:-$ROOT/target/waypost-local}
DHT_PORT=${WAYPOST_START_DHT_PORT:-4222}
PROXY_PORT=${WAYPOST_START_PROXY_PORT:-8080}
PROXY_DHT_PORT=${WAYPOST_START_PROXY_DHT_PORT:-4223}
TURN_PORT=${WAYPOST_START_TURN_PORT:-3478}
NS_PORT=${WAYPOST_START_NS_PORT:-8081}
HOST=127.0.0.1

case "$PROFILE" in
  debug) BUILD_FLAGS=() ;;
  release) BUILD_FLAGS=(--release) ;;
  *) echo "start.sh: WAYPOST_START_PROFILE must be debug or release" >&2; exit 64 ;;
esac
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/$PROFILE

if [ -n "${WAYPOST_START_NO_BUILD:-}" ]; then
  echo "Using the binaries in $BIN (WAYPOST_START_NO_BUILD)"
else
  echo "Building the servers and node-client ($PROFILE)..."
  if ! cargo build "${BUILD_FLAGS[@]}" -p waypost-dht-node -p waypost-dht-proxy \
      -p waypost-turn-server -p waypost-nameserver -p waypost-node-client; then
    echo "start.sh: the build failed" >&2
    exit 1
  fi
fi
mkdir -p "$DATA/nameserver" "$DATA/dht-proxy"

PIDS=()
NAMES=()
STARTED=()

stop_all() {
  trap - INT TERM
  echo
  echo "Stopping..."
  local i
  for i in "${!PIDS[@]}"; do
    kill -TERM "${PIDS[$i]}" 2>/dev/null
  done
  for _ in $(seq 1 100); do
    local alive=0
    for i in "${!PIDS[@]}"; do
      kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for i in "${!PIDS[@]}"; do
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      echo "  ${NAMES[$i]} did not stop in 10 s; killing it"
      kill -KILL "${PIDS[$i]}" 2>/dev/null
    fi
    wait "${PIDS[$i]}" 2>/dev/null
  done
  echo "Stopped."
  exit 0
}
trap stop_all INT TERM

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# start NAME TCP_PORT_OR_EMPTY BINARY ARGS...
start() {
  local name=$1 port=$2 bin=$3
  shift 3
  if [ ! -x "$bin" ]; then
    echo "  $name: binary missing ($bin) - skipped"
    return
  fi
  "$bin" "$@" &
  local pid=$!
  # Ready: the TCP port accepts connections (or, for UDP-only servers, still running after 1 s).
  local ok=0 n
  for n in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if [ -n "$port" ] && tcp_open "$HOST" "$port"; then ok=1; break; fi
    if [ -z "$port" ] && [ "$n" -ge 10 ]; then ok=1; break; fi
    sleep 0.1
  done
  if [ "$ok" = 1 ]; then
    PIDS+=("$pid")
    NAMES+=("$name")
    STARTED+=("$name")
    echo "  $name: started (pid $pid)"
  elif ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    local rc=$?
    if [ "$rc" = 70 ]; then
      echo "  $name: not implemented yet - skipped"
    else
      echo "  $name: exited with status $rc - skipped"
    fi
  else
    echo "  $name: not ready after 10 s - stopping it"
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
}

running() { local n; for n in "${STARTED[@]}"; do [ "$n" = "$1" ] && return 0; done; return 1; }

echo "Starting the suite on $HOST..."
start dht-node "" "$BIN/dht-node" --bind "$HOST" --port "$DHT_PORT"
start dht-proxy "$PROXY_PORT" "$BIN/dht-proxy" --listen "$HOST:$PROXY_PORT" \
  --port "$PROXY_DHT_PORT" --bootstrap "$HOST:$DHT_PORT" --data-dir "$DATA/dht-proxy"
# Local demo: relay on loopback and allow loopback peers so that two clients on this machine
# can reach each other's relayed addresses. Never allow loopback peers on a public server.
start turn-server "$TURN_PORT" "$BIN/turn-server" --listen "$HOST:$TURN_PORT" \
  --relay-ip "$HOST" --allow-loopback-peers
start nameserver "$NS_PORT" "$BIN/nameserver" --listen "$HOST:$NS_PORT" \
  --data-dir "$DATA/nameserver"

if [ ${#PIDS[@]} -eq 0 ]; then
  echo "start.sh: no server could be started" >&2
  exit 1
fi

# The proxy is useful once its DHT node has joined the bootstrap node (GET / shows good nodes).
proxy_connected() {
  local reply
  reply=$( (exec 3<>"/dev/tcp/$HOST/$PROXY_PORT" &&
    printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&3 && timeout 2 cat <&3) 2>/dev/null)
  [[ "$reply" =~ \"good\":[1-9] ]]
}
if running dht-proxy && running dht-node; then
  for n in $(seq 1 150); do
    proxy_connected && break
    [ "$n" = 150 ] && echo "  dht-proxy: its DHT node has not joined the bootstrap node yet"
    sleep 0.1
  done
fi

NC="$BIN/node-client"
echo
echo "Endpoints:"
running dht-node && echo "  DHT bootstrap node   udp $HOST:$DHT_PORT"
running dht-proxy && echo "  DHT proxy            http://$HOST:$PROXY_PORT   (Jami: DHT proxy server)"
running turn-server && echo "  TURN server          $HOST:$TURN_PORT udp+tcp, user ring, password ring, realm ring"
running nameserver && echo "  Name server          http://$HOST:$NS_PORT   (Jami: name server)"
echo "  State                $DATA"
echo
echo "Try it (paste into another terminal):"
echo "  NC=$NC"
running nameserver && {
  echo "  \$NC name register --server http://$HOST:$NS_PORT --identity /tmp/alice.pem alice"
  echo "  \$NC name lookup --server http://$HOST:$NS_PORT alice"
}
running dht-proxy && {
  echo "  \$NC dht put --proxy http://$HOST:$PROXY_PORT hello 'hi there'"
  echo "  \$NC dht get --proxy http://$HOST:$PROXY_PORT hello"
}
running dht-node && echo "  \$NC dht get --bootstrap $HOST:$DHT_PORT --bind $HOST:0 hello"
running turn-server && echo "  \$NC turn allocate --server $HOST:$TURN_PORT --transport tcp --tcp-relay"
echo
echo "Waypost is ready. Press Ctrl-C to stop."

while true; do
  sleep 1 &
  wait $! 2>/dev/null
  for i in "${!PIDS[@]}"; do
    if [ -n "${PIDS[$i]}" ] && ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      wait "${PIDS[$i]}" 2>/dev/null
      echo "start.sh: ${NAMES[$i]} stopped unexpectedly (status $?)" >&2
      unset 'PIDS[i]'
    fi
  done
  if [ ${#PIDS[@]} -eq 0 ]; then
    echo "start.sh: every server has stopped" >&2
    exit 1
  fi
done
