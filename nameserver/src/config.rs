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
    /// A registrar contract on an Ethereum chain (needs a build with the `eth` feature).
    Ethereum,
}

impl FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redb" => Ok(Self::Redb),
            "memory" => Ok(Self::Memory),
            "ethereum" => Ok(Self::Ethereum),
            _ => Err("expected redb, memory or ethereum".into()),
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
        /// Store backend: redb (durable, default), memory or ethereum (see docs/nameserver-ethereum.md).
        #[arg(long, env = "WAYPOST_NS_STORE", value_name = "KIND")]
        pub store: StoreKind = StoreKind::Redb,
        /// Admin listener (/metrics, /healthz, /readyz), or off.
        #[arg(long, env = "WAYPOST_NS_ADMIN_LISTEN", value_name = "ADDR")]
        pub admin_listen: AdminAddr = AdminAddr::Off,
        /// HTTPS listener (HTTP/1.1 over TLS), or off.
        #[arg(long, env = "WAYPOST_NS_TLS_LISTEN", value_name = "ADDR")]
        pub tls_listen: AdminAddr = AdminAddr::Off,
        /// PEM certificate chain for the HTTPS listener (reloaded on SIGHUP).
        #[arg(long, env = "WAYPOST_NS_TLS_CERT", value_name = "FILE")]
        pub tls_cert: PathBuf = PathBuf::new(),
        /// PEM private key for the HTTPS listener.
        #[arg(long, env = "WAYPOST_NS_TLS_KEY", value_name = "FILE")]
        pub tls_key: PathBuf = PathBuf::new(),
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
        /// Name policy: ascii (the reference rule, default) or unicode.
        #[arg(long, env = "WAYPOST_NS_NAME_POLICY", value_name = "POLICY")]
        pub name_policy: crate::policy::NamePolicy = crate::policy::NamePolicy::Ascii,
        /// Accept legacy registrations without publickey and signature.
        #[arg(long, env = "WAYPOST_NS_ALLOW_LEGACY", value_name = "BOOL")]
        pub allow_legacy: bool = false,
        /// Grace period for in-flight requests at shutdown, in milliseconds.
        #[arg(long, env = "WAYPOST_NS_SHUTDOWN_GRACE_MS", value_name = "MS")]
        pub shutdown_grace_ms: u64 = 5_000,
        /// store = ethereum: JSON-RPC endpoint (http or https) of the chain node.
        #[arg(long, env = "WAYPOST_NS_ETH_RPC_URL", value_name = "URL")]
        pub eth_rpc_url: String = "http://127.0.0.1:8545".to_owned(),
        /// store = ethereum: address (0x + 40 hex) of the registrar contract.
        #[arg(long, env = "WAYPOST_NS_ETH_CONTRACT", value_name = "ADDRESS")]
        pub eth_contract: String = String::new(),
        /// store = ethereum: expected chain id (1551 is the Jami chain).
        #[arg(long, env = "WAYPOST_NS_ETH_CHAIN_ID", value_name = "ID")]
        pub eth_chain_id: u64 = 1551,
        /// store = ethereum: file holding the sender's hex private key (takes precedence over
        /// eth-key-env).
        #[arg(long, env = "WAYPOST_NS_ETH_KEY_FILE", value_name = "FILE")]
        pub eth_key_file: PathBuf = PathBuf::new(),
        /// store = ethereum: name of the environment variable holding the sender's hex private
        /// key, used when eth-key-file is not set.
        #[arg(long, env = "WAYPOST_NS_ETH_KEY_ENV", value_name = "VAR")]
        pub eth_key_env: String = "WAYPOST_NS_ETH_KEY".to_owned(),
        /// store = ethereum: blocks a registration must be deep before it is acknowledged (1 =
        /// included in a block).
        #[arg(long, env = "WAYPOST_NS_ETH_CONFIRMATIONS", value_name = "COUNT")]
        pub eth_confirmations: u64 = 1,
        /// store = ethereum: longest wait for a registration's receipt, in milliseconds; must be
        /// below request-timeout-ms.
        #[arg(long, env = "WAYPOST_NS_ETH_TX_TIMEOUT_MS", value_name = "MS")]
        pub eth_tx_timeout_ms: u64 = 8_000,
        /// store = ethereum: timeout of one JSON-RPC call, in milliseconds.
        #[arg(long, env = "WAYPOST_NS_ETH_RPC_TIMEOUT_MS", value_name = "MS")]
        pub eth_rpc_timeout_ms: u64 = 2_000,
        /// store = ethereum: how long a "not registered" answer is cached, in milliseconds
        /// (0 = not cached). Registered names are cached without expiry.
        #[arg(long, env = "WAYPOST_NS_ETH_NEGATIVE_CACHE_MS", value_name = "MS")]
        pub eth_negative_cache_ms: u64 = 2_000,
        /// store = ethereum: most entries of each lookup cache (memory only).
        #[arg(long, env = "WAYPOST_NS_ETH_CACHE_ENTRIES", value_name = "COUNT")]
        pub eth_cache_entries: usize = 65_536,
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
    /// HTTPS listener with its certificate and key files.
    pub tls: Option<TlsSettings>,
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
    /// Which names are accepted.
    pub name_policy: crate::policy::NamePolicy,
    /// Whether legacy unsigned registrations are accepted.
    pub allow_legacy: bool,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Ethereum backend settings; `Some` exactly when `store` is [`StoreKind::Ethereum`].
    pub eth: Option<EthSettings>,
}

/// Where the Ethereum sender's private key comes from. The key itself is never held in
/// settings (and never logged); it is read when the store opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding the hex key (optionally `0x`-prefixed, surrounding whitespace ignored).
    File(PathBuf),
    /// An environment variable holding the hex key.
    Env(String),
}

/// Validated settings of the Ethereum backend.
#[derive(Clone)]
pub struct EthSettings {
    /// JSON-RPC endpoint. Not printed by `Debug`: it may embed an API token.
    pub rpc_url: String,
    /// Registrar contract address.
    pub contract: [u8; 20],
    /// Expected chain id.
    pub chain_id: u64,
    /// Sender key source.
    pub key: KeySource,
    /// Confirmations required before a registration is acknowledged (at least 1).
    pub confirmations: u64,
    /// Longest wait for a receipt.
    pub tx_timeout: Duration,
    /// Timeout of one JSON-RPC call.
    pub rpc_timeout: Duration,
    /// Lifetime of a cached "not registered" answer (zero: not cached).
    pub negative_ttl: Duration,
    /// Most entries of each cache.
    pub cache_entries: usize,
}

impl std::fmt::Debug for EthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthSettings")
            .field("rpc_url", &"<redacted>")
            .field("chain_id", &self.chain_id)
            .field("confirmations", &self.confirmations)
            .finish_non_exhaustive()
    }
}

/// The HTTPS listener.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
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
        let tls = match self.tls_listen.addr() {
            None => None,
            Some(listen) => {
                if self.tls_cert.as_os_str().is_empty() || self.tls_key.as_os_str().is_empty() {
                    return Err(invalid("tls-listen needs tls-cert and tls-key"));
                }
                if listen == self.listen {
                    return Err(invalid("tls-listen must differ from listen"));
                }
                Some(TlsSettings {
                    listen,
                    cert: self.tls_cert.clone(),
                    key: self.tls_key.clone(),
                })
            }
        };
        if self.max_connections == 0 {
            return Err(invalid("max-connections must be at least 1"));
        }
        let request_timeout = ms(self.request_timeout_ms, "request-timeout-ms")?;
        let eth = if self.store == StoreKind::Ethereum {
            Some(self.validate_eth(request_timeout)?)
        } else {
            None
        };
        Ok(Settings {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            store: self.store,
            admin_listen: self.admin_listen,
            tls,
            path_prefix: prefix,
            body_limit: self.body_limit,
            post_limit,
            request_timeout,
            header_timeout: ms(self.header_timeout_ms, "header-timeout-ms")?,
            idle_timeout: ms(self.idle_timeout_ms, "idle-timeout-ms")?,
            max_connections: self.max_connections,
            name_policy: self.name_policy,
            allow_legacy: self.allow_legacy,
            shutdown_grace: ms(self.shutdown_grace_ms, "shutdown-grace-ms")?,
            eth,
        })
    }

    /// Checks the `eth-*` keys (only when `store = ethereum`), including that the key loads.
    fn validate_eth(&self, request_timeout: Duration) -> Result<EthSettings, NetError> {
        if !cfg!(feature = "eth") {
            return Err(invalid(
                "store = ethereum needs a nameserver built with the eth feature",
            ));
        }
        let url = self.eth_rpc_url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(invalid("eth-rpc-url must be an http:// or https:// URL"));
        }
        let hex = self.eth_contract.trim();
        let hex = hex.strip_prefix("0x").unwrap_or(hex);
        let mut contract = [0u8; 20];
        if hex.len() != 40
            || hex::decode_to_slice(hex, &mut contract).is_err()
            || contract == [0; 20]
        {
            return Err(invalid(
                "eth-contract must be a non-zero address (0x followed by 40 hex digits)",
            ));
        }
        if self.eth_chain_id == 0 {
            return Err(invalid("eth-chain-id must be at least 1"));
        }
        if !(1..=64).contains(&self.eth_confirmations) {
            return Err(invalid("eth-confirmations must be between 1 and 64"));
        }
        let key = if self.eth_key_file.as_os_str().is_empty() {
            if self.eth_key_env.is_empty() {
                return Err(invalid("set eth-key-file or eth-key-env"));
            }
            KeySource::Env(self.eth_key_env.clone())
        } else {
            KeySource::File(self.eth_key_file.clone())
        };
        let ms_range = |v: u64, key: &str, min: u64| -> Result<Duration, NetError> {
            if (min..=3_600_000).contains(&v) {
                Ok(Duration::from_millis(v))
            } else {
                Err(NetError::Invalid(format!(
                    "{key} must be between {min} and 3600000 ms"
                )))
            }
        };
        let tx_timeout = ms_range(self.eth_tx_timeout_ms, "eth-tx-timeout-ms", 1)?;
        if tx_timeout >= request_timeout {
            return Err(invalid(
                "eth-tx-timeout-ms must be below request-timeout-ms",
            ));
        }
        let rpc_timeout = ms_range(self.eth_rpc_timeout_ms, "eth-rpc-timeout-ms", 1)?;
        let negative_ttl = ms_range(self.eth_negative_cache_ms, "eth-negative-cache-ms", 0)?;
        if self.eth_cache_entries == 0 {
            return Err(invalid("eth-cache-entries must be at least 1"));
        }
        #[cfg(feature = "eth")]
        crate::eth::load_key(&key).map_err(|e| NetError::Invalid(e.to_string()))?;
        Ok(EthSettings {
            rpc_url: url.to_owned(),
            contract,
            chain_id: self.eth_chain_id,
            key,
            confirmations: self.eth_confirmations,
            tx_timeout,
            rpc_timeout,
            negative_ttl,
            cache_entries: self.eth_cache_entries,
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
            NameserverConfig {
                tls_listen: "127.0.0.1:8443".parse().unwrap(),
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
