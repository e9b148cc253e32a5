//! Integration tests of the TURN server: the real server in-process on loopback, driven by our
//! own codec and by coturn's real clients (turnutils_uclient, turnutils_stunclient,
//! turnutils_peer), which the tests start and stop by PID.

#![allow(unreachable_pub)]

mod auth;
mod canary;
mod client;
mod common;
mod interop;
mod rfc6062;
mod robustness;
mod security;
