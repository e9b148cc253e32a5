//! Test support for the workspace's end-to-end and interop tests.
//!
//! - [`canary`]: the privacy canary: plant identifiers, run a server, fail on any leak.
//! - [`proc`]: start real processes (ours and reference peers) on loopback, kill them by PID.

pub mod canary;
pub mod proc;
