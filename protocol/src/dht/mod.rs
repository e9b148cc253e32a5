//! OpenDHT 2.4-compatible node-to-node protocol, sans-IO.
//!
//! - [`infohash`]: 20-byte keys and node ids.
//! - [`value`]: values, queries, field projections, RSA-SHA512 signature checks.
//! - [`msg`]: the msgpack envelope, arguments, packed node lists, fragments.

pub mod infohash;
pub mod msg;
pub mod routing;
pub mod storage;
pub mod value;

pub use infohash::InfoHash;
pub use msg::{Args, Body, Message, QueryKind, WireValues};
pub use value::{Field, FieldValue, Query, Value};
