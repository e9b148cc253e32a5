//! Integration tests of the DHT node against real OpenDHT 2.4.12 peers on loopback.

mod binary;
mod canary;
mod common;
mod interop;
mod raw;
