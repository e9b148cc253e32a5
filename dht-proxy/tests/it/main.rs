//! Integration tests of the DHT proxy: the real server in-process on loopback.

#![allow(unreachable_pub, clippy::unwrap_used)]

mod canary;
mod cli;
mod common;
mod interop;
mod push;
mod routes;
mod tls_metrics;
