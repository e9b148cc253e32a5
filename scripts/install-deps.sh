#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: the reference peers (OpenDHT's dhtnode and
# Python bindings, coturn's turnserver and turnutils), load tools, and cargo-nextest.
# Idempotent: installs only what is missing. Run as root (or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# Debian packages: binary name -> package.
declare -A PKG=(
  [dhtnode]=dhtnode
  [turnserver]=coturn
  [turnutils_uclient]=coturn
  [wrk]=wrk
  [ip]=iproute2
)
missing=()
for bin in "${!PKG[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${PKG[$bin]}")
done
# The OpenDHT Python bindings load only in Debian's own interpreter.
if ! /usr/bin/python3 -c 'import opendht' >/dev/null 2>&1; then missing+=(python3-opendht); fi

if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t uniq < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "installing Debian packages: ${uniq[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${uniq[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
