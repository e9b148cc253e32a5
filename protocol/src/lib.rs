//! Sans-IO protocol logic for the Waypost suite.
//!
//! Nothing in this crate opens a socket, reads a clock or spawns a task: bytes and time go in,
//! datagrams, timers and events come out. The async servers in the other crates drive it.
//!
//! Modules:
//! - [`redact`]: wrapper types that never print the identifier they hold.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod redact;
