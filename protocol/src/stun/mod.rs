//! STUN/TURN codec (RFC 8489, RFC 8656, RFC 6062, RFC 6156).
//!
//! Zero-copy: [`Message::parse`] validates a datagram (or one framed TCP message) in place and
//! hands out attribute values as slices of the input; [`MessageWriter`] appends a message into a
//! caller-owned `Vec<u8>` whose capacity is reused, so a warmed-up server allocates nothing per
//! message. [`channel`] frames ChannelData. [`auth`] derives long-term and REST-API keys and
//! issues stateless nonces.
//!
//! Nothing here does I/O or reads a clock: time comes in as seconds since the Unix epoch.

pub mod attr;
pub mod auth;
pub mod channel;
mod message;

pub use message::{
    AttrIter, Class, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE, Message, MessageWriter, StunError,
    frame_len, is_stun, message_type,
};

/// STUN/TURN method numbers.
pub mod method {
    /// Binding (RFC 8489).
    pub const BINDING: u16 = 0x001;
    /// Allocate (RFC 8656).
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh (RFC 8656).
    pub const REFRESH: u16 = 0x004;
    /// Send indication (RFC 8656).
    pub const SEND: u16 = 0x006;
    /// Data indication (RFC 8656).
    pub const DATA: u16 = 0x007;
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: u16 = 0x009;
    /// Connect (RFC 6062).
    pub const CONNECT: u16 = 0x00a;
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: u16 = 0x00b;
    /// ConnectionAttempt indication (RFC 6062).
    pub const CONNECTION_ATTEMPT: u16 = 0x00c;
}
