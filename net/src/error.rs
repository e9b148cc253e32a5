//! Errors of the shared plumbing. Messages never carry addresses or identifiers.

use std::io;

/// An error from the shared plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file: {0}")]
    ConfigRead(io::ErrorKind),
    /// The configuration file is not valid TOML or has an unknown key or a bad value.
    #[error("invalid configuration file: {0}")]
    ConfigParse(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A listener could not be bound. The address is deliberately not part of the message.
    #[error("cannot bind the {what} listener: {kind}")]
    Bind {
        /// Which listener (a static label such as "udp" or "admin").
        what: &'static str,
        /// The operating system's reason.
        kind: io::ErrorKind,
    },
    /// A TLS certificate or key could not be loaded.
    #[error("cannot load TLS material: {0}")]
    Tls(String),
    /// Any other I/O error.
    #[error("i/o error: {0}")]
    Io(io::ErrorKind),
}

impl From<io::Error> for NetError {
    fn from(e: io::Error) -> Self {
        Self::Io(e.kind())
    }
}
