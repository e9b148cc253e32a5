//! OpenDHT 2.4-compatible node-to-node protocol, sans-IO.
//!
//! - [`infohash`]: 20-byte keys and node ids.
//! - [`value`]: values, queries, field projections, RSA-SHA512 signature checks.
//! - [`msg`]: the msgpack envelope, arguments, packed node lists, fragments.

#![allow(clippy::collapsible_if)] // nested `if let`s read better than long let chains here

pub mod engine;
pub mod infohash;
pub mod msg;
pub mod routing;
pub mod sim;
pub mod storage;
pub mod value;

pub use engine::{Config, Dht, Event, OpId, Stats, Transmit};
pub use infohash::InfoHash;
pub use msg::{Args, Body, Message, QueryKind, WireValues};
pub use value::{Field, FieldValue, Query, Value};

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests anchor virtual time on the real clock
mod tests;
