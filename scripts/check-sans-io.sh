#!/usr/bin/env bash
# The protocol crate is sans-IO: it must not depend on an async runtime or socket library.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(cargo tree --locked -p waypost-protocol -e normal --prefix none --format '{p}' \
  | awk '{print $1}' | grep -E '^(tokio|mio|socket2|async-std|smol|quinn-udp)$' | sort -u || true)
if [ -n "$bad" ]; then
  echo "protocol must stay sans-IO, but it depends on: $bad" >&2
  exit 1
fi
echo "protocol is sans-IO (no tokio, mio, socket2)"
