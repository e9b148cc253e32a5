#!/usr/bin/env bash
# Builds the release binaries of every server, exactly as CI and the container images do: one
# `cargo build --release --locked` over all server packages at once (default features, so feature
# unification is the same on every run), then copies the binaries to an output directory.
#
#   scripts/build-release.sh [--out DIR]   build, then copy the binaries to DIR (default target/release-out)
#   scripts/build-release.sh --print       print the cargo command, one argument per line, and exit
#   scripts/build-release.sh --bins        print the binary names, one per line, and exit
#
# deploy/Dockerfile runs this script (with --out /out) and nothing else to compile; a test in
# tests/tests/deploy.rs checks that the Dockerfile and this script agree.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary:package, one per server binary the project ships.
TARGETS=(
  nameserver:waypost-nameserver
  deploy-registrar:waypost-nameserver
  turn-server:waypost-turn-server
  dht-node:waypost-dht-node
  dht-proxy:waypost-dht-proxy
  node-client:waypost-node-client
)

# Cargo features of the release build, as package/feature: exactly the features CI's test run
# enables (scripts/test.sh runs the tests with waypost-nameserver/eth, the Ethereum registrar
# backend), so the shipped binaries are the tested ones; tests/tests/deploy.rs checks this.
FEATURES=(waypost-nameserver/eth)

cmd=(cargo build --release --locked)
if [ ${#FEATURES[@]} -gt 0 ]; then
  cmd+=(--features "$(IFS=,; echo "${FEATURES[*]}")")
fi
bins=()
for t in "${TARGETS[@]}"; do
  bin=${t%%:*}
  pkg=${t#*:}
  cmd+=(-p "$pkg" --bin "$bin")
  bins+=("$bin")
done

out="target/release-out"
case "${1:-}" in
  --print) printf '%s\n' "${cmd[@]}"; exit 0 ;;
  --bins) printf '%s\n' "${bins[@]}"; exit 0 ;;
  --out) out=${2:?--out needs a directory} ;;
  "") ;;
  *) echo "usage: $0 [--out DIR | --print | --bins]" >&2; exit 64 ;;
esac

"${cmd[@]}"
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$out"
for bin in "${bins[@]}"; do
  install -m 0755 "$target_dir/release/$bin" "$out/$bin"
done
echo "built ${bins[*]} into $out"
