//! Configuration: defaults < TOML file (`--config`) < environment < flags.
//!
//! Keys (TOML kebab-case, flag `--key`, environment `WAYPOST_NS_KEY`) are documented in
//! `docs/nameserver.md`. [`NameserverConfig::validate`] turns the resolved values into
//! [`Settings`] before any socket is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use waypost_net::NetError;
use waypost_net::config::{AdminAddr, check_admin_addr};

/// Which store backs the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// redb database in the data directory (default; durable).
    Redb,
    /// In memory only: everything is lost on exit. For tests and demos.
    Memory,
}

impl FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redb" => Ok(Self::Redb),
            "memory" => Ok(Self::Memory),
            _ => Err("expected redb or memory".into()),
        }
    }
}

waypost_net::layered_config! {
    /// The name server's configuration, as resolved from all layers.
    pub struct NameserverConfig / NameserverLayer {
        /// HTTP listen address.
        #[arg(long, env = "WAYPOST_NS_LISTEN", value_name = "ADDR")]
        pub listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8080)),
        /// Directory holding the name database (created if missing).
        #[arg(long, env = "WAYPOST_NS_DATA_DIR", value_name = "DIR")]
        pub data_dir: PathBuf = PathBuf::from("./data"),
        /// Store backend: redb (durable, default) or memory.
        #[arg(long, env = "WAYPOST_NS_STORE", value_name = "KIND")]
        pub store: StoreKind = StoreKind::Redb,
        /// Admin listener (/metrics, /healthz, /readyz), or off.
        #[arg(long, env = "WAYPOST_NS_ADMIN_LISTEN", value_name = "ADDR")]
        pub admin_listen: AdminAddr = AdminAddr::Off,
        /// Allow a non-loopback admin listener.
        #[arg(long, env = "WAYPOST_NS_ADMIN_PUBLIC", value_name = "BOOL")]
        pub admin_public: bool = false,
        /// Path prefix the API is served under, e.g. /ns (matched case-insensitively).
        #[arg(long, env = "WAYPOST_NS_PATH_PREFIX", value_name = "PATH")]
        pub path_prefix: String = String::new(),
        /// Maximum request body size in bytes.
        #[arg(long, env = "WAYPOST_NS_BODY_LIMIT", value_name = "BYTES")]
        pub body_limit: usize = 16 * 1024,
        /// Registrations (POST) allowed per source IP per minute; 0 disables the limit.
        #[arg(long, env = "WAYPOST_NS_POST_RATE", value_name = "PER_MINUTE")]
        pub post_rate: u32 = 10,
        /// Burst of POSTs a source IP may send at once.
        #[arg(long, env = "WAYPOST_NS_POST_BURST", value_name = "COUNT")]
        pub post_burst: u32 = 5,
        /// Most source IPs tracked by the POST rate limiter (memory only).
        #[arg(long, env = "WAYPOST_NS_RATE_LIMIT_ENTRIES", value_name = "COUNT")]
        pub rate_limit_entries: usize = 65_536,
        /// Whole-request timeout in milliseconds (answers 408).
        #[arg(long, env = "WAYPOST_NS_REQUEST_TIMEOUT_MS", value_name = "MS")]
        pub request_timeout_ms: u64 = 10_000,
        /// Time allowed to send the request headers, in milliseconds.
        #[arg(long, env = "WAYPOST_NS_HEADER_TIMEOUT_MS", value_name = "MS")]
        pub header_timeout_ms: u64 = 5_000,
        /// Idle keep-alive connections are closed after this many milliseconds.
        #[arg(long, env = "WAYPOST_NS_IDLE_TIMEOUT_MS", value_name = "MS")]
        pub idle_timeout_ms: u64 = 60_000,
        /// Most concurrent client connections; further ones wait in the accept queue.
        #[arg(long, env = "WAYPOST_NS_MAX_CONNECTIONS", value_name = "COUNT")]
        pub max_connections: usize = 4096,
        /// Accept legacy registrations without publickey and signature.
        #[arg(long, env = "WAYPOST_NS_ALLOW_LEGACY", value_name = "BOOL")]
        pub allow_legacy: bool = false,
        /// Grace period for in-flight requests at shutdown, in milliseconds.
        #[arg(long, env = "WAYPOST_NS_SHUTDOWN_GRACE_MS", value_name = "MS")]
        pub shutdown_grace_ms: u64 = 5_000,
    }
}

/// Validated runtime settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store backend.
    pub store: StoreKind,
    /// Admin listener.
    pub admin_listen: AdminAddr,
    /// Lowercase path prefix without a trailing slash ("" for none).
    pub path_prefix: String,
    /// Body cap in bytes.
    pub body_limit: usize,
    /// POST rate limit; `None` disables it.
    pub post_limit: Option<RateSettings>,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Header read timeout.
    pub header_timeout: Duration,
    /// Keep-alive idle timeout.
    pub idle_timeout: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Whether legacy unsigned registrations are accepted.
    pub allow_legacy: bool,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
}

/// Token-bucket parameters of the POST limiter.
#[derive(Clone, Copy, Debug)]
pub struct RateSettings {
    /// Tokens per minute.
    pub per_minute: u32,
    /// Bucket size.
    pub burst: u32,
    /// Most tracked source IPs.
    pub max_entries: usize,
}

impl Settings {
    /// Settings for in-process tests: loopback ephemeral port, memory store, no rate limit.
    pub fn for_tests() -> Self {
        let mut cfg = NameserverConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: StoreKind::Memory,
            post_rate: 0,
            ..NameserverConfig::default()
        };
        cfg.data_dir = std::env::temp_dir();
        // The defaults are valid by construction (checked by a unit test).
        cfg.validate()
            .unwrap_or_else(|_| unreachable!("test defaults are valid"))
    }
}

fn invalid(msg: &str) -> NetError {
    NetError::Invalid(msg.to_owned())
}

impl NameserverConfig {
    /// Checks every value and produces the runtime settings.
    pub fn validate(&self) -> Result<Settings, NetError> {
        check_admin_addr(self.admin_listen, self.admin_public)?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data-dir must not be empty"));
        }
        let prefix = self.path_prefix.trim_end_matches('/').to_ascii_lowercase();
        if !prefix.is_empty()
            && (!prefix.starts_with('/')
                || prefix.contains("//")
                || prefix.contains(['?', '#', '%']))
        {
            return Err(invalid(
                "path-prefix must be empty or an absolute path such as /ns",
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.body_limit) {
            return Err(invalid("body-limit must be between 1024 and 1048576 bytes"));
        }
        let post_limit = if self.post_rate == 0 {
            None
        } else {
            if self.post_burst == 0 {
                return Err(invalid(
                    "post-burst must be at least 1 when post-rate is set",
                ));
            }
            if self.rate_limit_entries == 0 {
                return Err(invalid("rate-limit-entries must be at least 1"));
            }
            Some(RateSettings {
                per_minute: self.post_rate,
                burst: self.post_burst,
                max_entries: self.rate_limit_entries,
            })
        };
        let ms = |v: u64, key: &str| -> Result<Duration, NetError> {
            if (1..=3_600_000).contains(&v) {
                Ok(Duration::from_millis(v))
            } else {
                Err(NetError::Invalid(format!(
                    "{key} must be between 1 and 3600000 ms"
                )))
            }
        };
        if self.max_connections == 0 {
            return Err(invalid("max-connections must be at least 1"));
        }
        Ok(Settings {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            store: self.store,
            admin_listen: self.admin_listen,
            path_prefix: prefix,
            body_limit: self.body_limit,
            post_limit,
            request_timeout: ms(self.request_timeout_ms, "request-timeout-ms")?,
            header_timeout: ms(self.header_timeout_ms, "header-timeout-ms")?,
            idle_timeout: ms(self.idle_timeout_ms, "idle-timeout-ms")?,
            max_connections: self.max_connections,
            allow_legacy: self.allow_legacy,
            shutdown_grace: ms(self.shutdown_grace_ms, "shutdown-grace-ms")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let s = NameserverConfig::default().validate().unwrap();
        assert_eq!(s.listen.port(), 8080);
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.store, StoreKind::Redb);
        assert!(s.post_limit.is_some());
        let _ = Settings::for_tests();
    }

    #[test]
    fn bad_values_are_rejected() {
        let bad = [
            NameserverConfig {
                body_limit: 10,
                ..Default::default()
            },
            NameserverConfig {
                path_prefix: "ns".into(),
                ..Default::default()
            },
            NameserverConfig {
                request_timeout_ms: 0,
                ..Default::default()
            },
            NameserverConfig {
                post_burst: 0,
                ..Default::default()
            },
            NameserverConfig {
                max_connections: 0,
                ..Default::default()
            },
            NameserverConfig {
                admin_listen: "0.0.0.0:9100".parse().unwrap(),
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err());
        }
        let ok = NameserverConfig {
            path_prefix: "/NS/".into(),
            ..Default::default()
        };
        assert_eq!(ok.validate().unwrap().path_prefix, "/ns");
    }

    #[test]
    fn toml_layer_parses_and_rejects_unknown_keys() {
        let layer: NameserverLayer =
            waypost_net::config::parse_layer("store = \"memory\"\npost-rate = 3\n").unwrap();
        assert_eq!(layer.store, Some(StoreKind::Memory));
        assert!(waypost_net::config::parse_layer::<NameserverLayer>("nope = 1\n").is_err());
    }
}
