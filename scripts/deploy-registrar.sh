#!/bin/sh
# Deploys the name registrar contract (nameserver/contract/Registrar.sol, GlobalRegistrar ABI) to
# the chain at --rpc-url and prints its address, for `eth-contract` in the name server's config.
# Key: --key-file FILE, or the environment variable WAYPOST_NS_ETH_KEY (hex). Example:
#   WAYPOST_NS_ETH_KEY=0x... scripts/deploy-registrar.sh --rpc-url http://127.0.0.1:8545
exec cargo run --manifest-path "$(dirname "$0")/../Cargo.toml" --quiet --release --locked -p waypost-nameserver --features eth --bin deploy-registrar -- "$@"
