//! Integration tests of the name server: the spec's §6 conformance table, durability across
//! `kill -9`, limits, configuration and the privacy canary.

mod backend;
mod canary;
mod cli;
mod common;
mod conformance;
mod crypto;
mod durability;
mod limits;
mod tls;
// The same conformance suite and chain-specific tests against a registrar contract on anvil.
#[cfg(feature = "eth")]
mod interop_eth;
