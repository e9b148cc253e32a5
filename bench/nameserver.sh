#!/usr/bin/env bash
# Name registrar benchmark: GET /name, GET /addr and POST /name throughput and latency on
# loopback, against the release binary with the default redb store (fsync per registration).
#
#   bench/nameserver.sh            # RUNS=3 DUR=10s CONN=50 PORT=18080 FRESH=400 BITS=2048
#   REF_URL=http://127.0.0.1:8080 bench/nameserver.sh
#
# With REF_URL, the same wrk runs are made against a reference name server (jami-nameservice
# index.js on an anvil chain with "alice" registered; set up by hand outside the repository, see
# docs/benchmarks.md) in the same session, interleaved with ours, as the anchor.
#
# GETs and the idempotent POST use wrk (-t2 -c$CONN -d$DUR --latency, the parameters of the
# spec's reference anchor); the POST body is signed with an OpenSSL-made RSA-4096 key. Fresh
# registrations (one new identity and one durable write per request) use the in-repo load
# generator nameserver/benches/post_load.rs. Every loop is bounded by count and time; the server
# is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} DUR=${DUR:-10s} CONN=${CONN:-50} PORT=${PORT:-18080} FRESH=${FRESH:-400} BITS=${BITS:-2048}
URL="http://127.0.0.1:$PORT"

cargo build --release -q -p waypost-nameserver
WORK=$(mktemp -d)
./target/release/nameserver --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --post-rate 0 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# An RSA-4096 identity made by OpenSSL, and the exact body jami-daemon would send for "alice".
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out "$WORK/k.pem" 2>/dev/null
openssl pkey -in "$WORK/k.pem" -pubout -out "$WORK/pub.pem"
ID=$(openssl pkey -in "$WORK/k.pem" -pubout -outform DER | sha1sum | cut -c1-40)
PK=$( (cat "$WORK/pub.pem"; printf '\0') | base64 -w0)
printf 'alice' > "$WORK/name"
SIG=$(openssl dgst -sha512 -sign "$WORK/k.pem" "$WORK/name" | base64 -w0)
printf '{"addr":"%s","owner":"%s","signature":"%s","publickey":"%s"}' "$ID" "$(printf '1%.0s' $(seq 40))" "$SIG" "$PK" > "$WORK/body.json"
curl -sf -X POST -H 'Content-Type: application/json' --data-binary @"$WORK/body.json" "$URL/name/alice" > /dev/null
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$WORK/body.json", "rb"); wrk.body = f:read("*a"); f:close()
LUA

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# to_ms "1.23ms" / "456.00us" / "1.02s" -> milliseconds
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f\n", v}'; }

run_wrk() { # label path [lua] [base-url]
  local label=$1 path=$2 lua=${3:-} base=${4:-$URL} rps=() p50=() p99=()
  for _ in $(seq "$RUNS"); do
    out=$(wrk -t2 -c"$CONN" -d"$DUR" --latency ${lua:+-s "$lua"} "$base$path")
    if grep -q "Non-2xx" <<<"$out"; then non2xx=$(grep "Non-2xx" <<<"$out" | awk '{print $NF}'); else non2xx=0; fi
    rps+=("$(awk '/Requests\/sec/ {print $2}' <<<"$out")")
    p50+=("$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)")
    p99+=("$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)")
  done
  printf '| %s | %.0f | %s | %s | %s |\n' "$label" "$(printf '%s\n' "${rps[@]}" | median)" \
    "$(printf '%s\n' "${p50[@]}" | median)" "$(printf '%s\n' "${p99[@]}" | median)" "$non2xx"
}

echo "| path | req/s (median of $RUNS) | p50 ms | p99 ms | non-2xx in last run |"
echo "|---|---|---|---|---|"
if [ -n "${REF_URL:-}" ]; then
  run_wrk "reference: GET /name/alice (200)" /name/alice "" "$REF_URL"
  run_wrk "reference: GET /name/doesnotexist (404)" /name/doesnotexist "" "$REF_URL"
fi
run_wrk "GET /name/alice (200)" /name/alice
run_wrk "GET /name/doesnotexist (404)" /name/doesnotexist
run_wrk "GET /addr/<id> (200)" "/addr/$ID"
run_wrk "POST /name/alice (idempotent repeat, RSA-4096 verify)" /name/alice "$WORK/post.lua"
echo
[ "${FRESH}" -gt 0 ] || exit 0
echo "Fresh registrations (RSA-$BITS identities, one durable redb commit each):"
cargo bench -q -p waypost-nameserver --bench post_load -- --url "$URL" --keys "$FRESH" --bits "$BITS" --concurrency 8 --mode fresh
