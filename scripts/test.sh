#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this script).
# On a fresh Debian machine it first installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-shot run gains nothing from incremental compilation, and full debug info in every test
# binary costs tens of gigabytes; line tables keep backtraces readable.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

bash scripts/install-deps.sh

# Some tests hold thousands of sockets open at once (10 000 half-open proxy listen streams).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== clippy (-D warnings), default features and with the Ethereum backend (the release build ships it)"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked --workspace --all-targets --features waypost-nameserver/eth -- -D warnings
echo "== sans-IO check"
bash scripts/check-sans-io.sh
if command -v cargo-deny >/dev/null 2>&1; then
  echo "== cargo deny (licenses, bans, sources)"
  cargo deny --locked check licenses bans sources
fi
echo "== tests (all crates; the name registrar with both backends, embedded and Ethereum)"
# The workspace run builds every binary first; tests must not rebuild them (tests/tests/*.rs).
WAYPOST_BINS_FRESH=1 \
  cargo nextest run --locked --workspace --features waypost-nameserver/eth --profile ci
