#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: the reference peers (OpenDHT's dhtnode
# and Python bindings, coturn's turnserver and turnutils, the real Jami daemon driven over D-Bus),
# network-namespace tools, load tools, the npm dev tools (anvil, solc) and cargo-nextest.
# Idempotent: installs only what is missing. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

PACKAGES=(
  dhtnode python3-opendht          # OpenDHT 2.4.12 reference node/proxy and Python bindings
  coturn                           # turnserver (benchmark anchor), turnutils_uclient/_peer/_stunclient
  jami-daemon dbus python3-dbus python3-gi   # the real Jami client, headless over D-Bus
  iproute2 nftables procps         # network namespaces, firewall rules, sysctl and kill
  wrk                              # HTTP load generator for benchmarks
  openssl                          # independent RSA cross-check in the name registrar tests
  python3-venv systemd             # deployment checks: hadolint/helm/kubernetes-validate venv, systemd-analyze
  nodejs npm                       # anvil and solc-js for the Ethereum bridge tests
)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    # A tool present from another source (for example Node.js installed outside apt) is enough.
    case "$p" in
      nodejs) command -v node >/dev/null 2>&1 && continue ;;
      npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm dev tools (versions pinned by package-lock.json), when the project has them.
if [ -f package-lock.json ] && [ ! -x node_modules/.bin/anvil ]; then
  echo "installing npm dev tools (npm ci)"
  npm ci --no-audit --no-fund --silent
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
