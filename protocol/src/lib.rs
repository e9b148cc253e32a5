//! Sans-IO protocol logic for the Waypost suite.
//!
//! Nothing in this crate opens a socket, reads a clock or spawns a task: bytes and time go in,
//! datagrams, timers and events come out. The async servers in the other crates drive it.
//!
//! Modules:
//! - [`redact`]: wrapper types that never print the identifier they hold.
//! - [`stun`]: STUN/TURN codec and TURN server state (RFC 8489, 8656, 6062, 6156).
//! - [`dht`]: OpenDHT wire protocol, values, routing table and searches.
//! - [`names`]: Jami name rules.
//! - [`identity`]: Jami identities (RSA keys, Jami IDs).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod dht;
pub mod identity;
pub mod names;
pub mod redact;
pub mod stun;
