#!/usr/bin/env bash
# Starts the whole suite on localhost with embedded defaults (no external services), prints the
# endpoints, and stops every server it started on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

# name | binary | arguments (localhost defaults). Servers are listed here as they land.
SERVERS=()

if [ ${#SERVERS[@]} -eq 0 ]; then
  echo "no servers yet: the DHT node, DHT proxy, TURN relay and name registrar are being built"
  exit 0
fi
