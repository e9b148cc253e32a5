#!/usr/bin/env bash
# DHT node benchmark: our `dht-node` vs OpenDHT's `dhtnode` 2.4.12 on the same host, loopback only.
#
#  1. Storage: COUNT (default 100000) put requests over UDP (distinct keys, 64-byte values) from
#     one raw client to a lone node; RSS before/after and CPU time (utime+stime) of the node.
#  2. Lookups: a NODES-node (default 50) loopback network of each implementation, KEYS values
#     (default 20) put from one node, then a fresh client node of the same implementation gets
#     each key; per-get latency as printed by the client (dhtnode "took X ms", ours "took X ms").
#
# Usage: bench/dht-node.sh [COUNT] [NODES] [KEYS]       (needs dhtnode; builds release binaries)
# Every process started here is killed by PID on exit.
set -euo pipefail
COUNT=${1:-100000}
NODES=${2:-50}
KEYS=${3:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
command -v dhtnode >/dev/null || { echo "dhtnode not installed" >&2; exit 1; }
cargo build --release -q -p waypost-dht-node --bin dht-node --example dht_load --manifest-path "$ROOT/Cargo.toml"
OURS="$ROOT/target/release/dht-node"
LOAD="$ROOT/target/release/examples/dht_load"

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }

# start_node NAME PORT INFIFO ARGS... : starts a node reading commands from a FIFO.
start_node() {
  local name=$1 port=$2 fifo=$3; shift 3
  mkfifo "$fifo"
  (sleep 100000 > "$fifo") & PIDS+=($!)
  if [ "$name" = ours ]; then
    "$OURS" --port "$port" --bind 127.0.0.1 --rate-limit 0 --rate-limit-per-ip 0 \
      --max-storage-bytes 1073741824 --interactive "$@" < "$fifo" > "$fifo.out" 2>&1 &
  else
    dhtnode -p "$port" --no-rate-limit "$@" < "$fifo" > "$fifo.out" 2>&1 &
  fi
  PIDS+=($!)
  LAST_PID=$!
}

storage_run() {
  local name=$1 port=$2
  start_node "$name" "$port" "$WORK/$name-store.in"
  local pid=$LAST_PID
  sleep 2
  local rss0 cpu0 rss1 cpu1 out
  rss0=$(rss_kb "$pid"); cpu0=$(cpu_s "$pid")
  out=$("$LOAD" "127.0.0.1:$port" "$COUNT" 256)
  sleep 2
  rss1=$(rss_kb "$pid"); cpu1=$(cpu_s "$pid")
  echo "store $name: $out | RSS ${rss0} kB -> ${rss1} kB (+$(( (rss1 - rss0) / 1024 )) MB) | CPU $(echo "$cpu1 - $cpu0" | bc) s"
  kill "$pid"
}

network_run() {
  local name=$1 base=$2
  local first=$base
  for i in $(seq 0 $((NODES - 1))); do
    local port=$((base + i))
    if [ "$i" = 0 ]; then start_node "$name" "$port" "$WORK/$name-$i.in"
    else start_node "$name" "$port" "$WORK/$name-$i.in" -b "127.0.0.1:$first"; fi
  done
  sleep 15
  for k in $(seq 1 "$KEYS"); do echo "p benchkey$k value$k" > "$WORK/$name-1.in"; done
  sleep 5
  start_node "$name" $((base + NODES)) "$WORK/$name-client.in" -b "127.0.0.1:$((base + 7))"
  sleep 10
  for k in $(seq 1 "$KEYS"); do echo "g benchkey$k" > "$WORK/$name-client.in"; sleep 0.5; done
  sleep 5
  local times found
  times=$(grep -oE "took [0-9.]+ ?(ms|us|s)" "$WORK/$name-client.in.out" | awk '{v=$2; u=$3; if (u=="") {u=substr(v, length(v)-1); v=v+0} if ($2 ~ /us$/ || u=="us") v=v/1000; if ($2 ~ /[0-9]s$/ && u=="s") v=v*1000; print v}' | sort -n)
  found=$(grep -cE 'value[0-9]+"' "$WORK/$name-client.in.out" || true)
  local n; n=$(echo "$times" | grep -c . || true)
  echo "get $name ($NODES nodes, $KEYS keys): $n gets completed, $found values found; latency ms min/median/p90/max: $(echo "$times" | head -1) / $(echo "$times" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') / $(echo "$times" | awk '{a[NR]=$1} END {print a[int(NR*0.9+0.5)]}') / $(echo "$times" | tail -1)"
}

storage_run ours 34222
storage_run dhtnode 34223
network_run ours 35000
network_run dhtnode 36000
