//! Redacting wrappers for addresses and identifiers.
//!
//! The suite is logless by design: no IP address, port, username, push token, InfoHash, name or
//! key may reach a log line, error message or metric label. Values that carry such data are held
//! in these wrappers, whose `Debug` and `Display` print only a placeholder. The raw value is
//! reached through `expose()`, which is easy to find in review.

use std::fmt;
use std::net::SocketAddr;

/// Declares a redacting newtype around `$inner`.
macro_rules! redacted {
    ($(#[$meta:meta])* $name:ident($inner:ty), $label:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($inner);

        impl $name {
            /// Wraps a raw value.
            pub fn new(value: $inner) -> Self {
                Self(value)
            }

            /// The raw value. Never pass it to a log macro, an error message or a metric label.
            pub fn expose(&self) -> &$inner {
                &self.0
            }

            /// Unwraps the raw value.
            pub fn into_inner(self) -> $inner {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!("<redacted ", $label, ">"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!("<redacted ", $label, ">"))
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

redacted!(
    /// A peer's transport address.
    PeerAddr(SocketAddr),
    "address"
);
redacted!(
    /// A TURN username, or any account name.
    Username(String),
    "username"
);
redacted!(
    /// A mobile push token or UnifiedPush endpoint.
    PushToken(String),
    "push token"
);
redacted!(
    /// A registered Jami name.
    Name(String),
    "name"
);
redacted!(
    /// A 20-byte DHT key or Jami ID.
    InfoHash([u8; 20]),
    "infohash"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let addr = PeerAddr::new("192.0.2.77:4567".parse().unwrap());
        for shown in [
            format!("{addr}"),
            format!("{addr:?}"),
            format!("{:#?}", Some(&addr)),
        ] {
            assert!(!shown.contains("192.0.2.77"), "{shown}");
            assert!(!shown.contains("4567"), "{shown}");
        }
        let user = Username::new("canary-user".into());
        assert_eq!(format!("{user:?}"), "<redacted username>");
        assert_eq!(user.expose(), "canary-user");
        let hash = InfoHash::new([0xab; 20]);
        assert!(!format!("{hash:?}").contains("ab"));
    }
}
