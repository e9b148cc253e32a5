//! Shared async plumbing for the Waypost servers.
//!
//! - [`config`]: layered configuration (defaults < TOML file < environment < flags), validated
//!   before any socket is bound, exit code 64 on invalid configuration.
//! - [`listen`]: UDP and TCP listener helpers (IPv4 and IPv6, large buffers, `SO_REUSEPORT`).
//! - [`tls`]: rustls server configuration from PEM files, reloadable.
//! - [`admin`]: the admin HTTP listener with `/metrics`, `/healthz` and `/readyz`.
//! - [`logging`]: the logless policy: `warn` by default, no access logs, a field allow-list.
//! - [`shutdown`]: SIGTERM/SIGINT handling and draining with a grace period.

#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod config;
pub mod error;
pub mod listen;
pub mod logging;
pub mod shutdown;
pub mod tls;

pub use error::NetError;

/// Exit code for invalid configuration or usage (`EX_USAGE` from sysexits.h).
pub const EX_USAGE: i32 = 64;
/// Exit code when a listener cannot be bound or the server fails at run time (`EX_SOFTWARE`).
pub const EX_SOFTWARE: i32 = 70;
