//! Configuration: the layered file/env/flag configuration and its validated runtime form.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use waypost_net::config::AdminAddr;

use crate::error::ProxyError;

/// Which gorush body format Android and iOS pushes use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PushFormat {
    /// OpenDHT 2.4: Android `priority` and `time_to_live` at the top level.
    V2,
    /// OpenDHT 3.3+/4.x: Android `android{priority,ttl}`; payloads carry `ids` and `pt`.
    #[default]
    V4,
}

impl FromStr for PushFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "2" | "2.4" | "v2" => Ok(Self::V2),
            "4" | "4.x" | "v4" | "3" => Ok(Self::V4),
            _ => Err("expected 2.4 or 4".to_owned()),
        }
    }
}

impl fmt::Display for PushFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V2 => "2.4",
            Self::V4 => "4",
        })
    }
}

impl<'de> serde::Deserialize<'de> for PushFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

waypost_net::layered_config! {
    /// The DHT proxy's configuration.
    pub struct ProxyConfig / ProxyLayer {
        /// HTTP listen address.
        #[arg(long, env = "WAYPOST_PROXY_LISTEN", value_name = "ADDR")]
        pub listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// UDP port of the proxy's own DHT node (0 = any).
        #[arg(long, env = "WAYPOST_PROXY_PORT", value_name = "PORT")]
        pub port: u16 = 4222,
        /// Bootstrap node HOST:PORT (repeatable).
        #[arg(long = "bootstrap", env = "WAYPOST_PROXY_BOOTSTRAP", value_name = "HOST:PORT", value_delimiter = ',')]
        pub bootstrap: Vec<String> = Vec::new(),
        /// Addresses the DHT node binds (repeatable; default: the IPv4 and IPv6 wildcards).
        #[arg(long = "dht-bind", env = "WAYPOST_PROXY_DHT_BIND", value_name = "IP", value_delimiter = ',')]
        pub dht_bind: Vec<std::net::IpAddr> = Vec::new(),
        /// DHT network id.
        #[arg(long, env = "WAYPOST_PROXY_NETWORK", value_name = "N")]
        pub network: u32 = 0,
        /// gorush-compatible push gateway base URL (empty: Android/iOS pushes are skipped).
        #[arg(long, env = "WAYPOST_PROXY_PUSH_SERVER", value_name = "URL")]
        pub push_server: String = String::new(),
        /// Default push topic (iOS bundle id) when a subscriber gives none.
        #[arg(long, env = "WAYPOST_PROXY_BUNDLE_ID", value_name = "ID")]
        pub bundle_id: String = String::new(),
        /// Gateway body format: 2.4 or 4.
        #[arg(long, env = "WAYPOST_PROXY_PUSH_FORMAT", value_name = "FORMAT")]
        pub push_format: PushFormat = PushFormat::V4,
        /// Directory for persistent state (push subscriptions, permanent puts). Empty: none.
        #[arg(long, env = "WAYPOST_PROXY_DATA_DIR", value_name = "DIR")]
        pub data_dir: PathBuf = PathBuf::new(),
        /// TLS listen address, or off.
        #[arg(long, env = "WAYPOST_PROXY_TLS_LISTEN", value_name = "ADDR")]
        pub tls_listen: AdminAddr = AdminAddr::Off,
        /// TLS certificate chain (PEM).
        #[arg(long, env = "WAYPOST_PROXY_CERT", value_name = "PEM")]
        pub cert: PathBuf = PathBuf::new(),
        /// TLS private key (PEM).
        #[arg(long, env = "WAYPOST_PROXY_KEY", value_name = "PEM")]
        pub key: PathBuf = PathBuf::new(),
        /// Admin listener (/metrics, /healthz, /readyz), loopback, or off.
        #[arg(long, env = "WAYPOST_PROXY_ADMIN_LISTEN", value_name = "ADDR")]
        pub admin_listen: AdminAddr = AdminAddr::Off,
        /// Allow a non-loopback admin listener.
        #[arg(long, env = "WAYPOST_PROXY_ADMIN_PUBLIC")]
        pub admin_public: bool = false,
        /// Largest request body in bytes.
        #[arg(long, env = "WAYPOST_PROXY_MAX_BODY", value_name = "BYTES")]
        pub max_body: usize = 256 * 1024,
        /// Open listen streams per source IP.
        #[arg(long, env = "WAYPOST_PROXY_MAX_STREAMS_PER_IP", value_name = "N")]
        pub max_streams_per_ip: usize = 1024,
        /// Open listen streams in total (503 beyond).
        #[arg(long, env = "WAYPOST_PROXY_MAX_STREAMS", value_name = "N")]
        pub max_streams: usize = 200_000,
        /// Push subscriptions per source IP.
        #[arg(long, env = "WAYPOST_PROXY_MAX_SUBSCRIPTIONS_PER_IP", value_name = "N")]
        pub max_subscriptions_per_ip: usize = 4096,
        /// Push subscriptions in total (503 beyond).
        #[arg(long, env = "WAYPOST_PROXY_MAX_SUBSCRIPTIONS", value_name = "N")]
        pub max_subscriptions: usize = 1_000_000,
        /// Permanent puts in total (503 beyond).
        #[arg(long, env = "WAYPOST_PROXY_MAX_PERMANENT_PUTS", value_name = "N")]
        pub max_permanent_puts: usize = 1_000_000,
        /// Seconds a keep-alive connection may sit idle between requests (0 = never closed).
        #[arg(long, env = "WAYPOST_PROXY_IDLE_TIMEOUT", value_name = "SECONDS")]
        pub idle_timeout: u64 = 300,
        /// Lease in seconds of a permanent put or a push subscription after its last POST or
        /// SUBSCRIBE (OpenDHT: 24 h; its clients renew every 22 h, so keep it above that).
        #[arg(long, env = "WAYPOST_PROXY_LEASE", value_name = "SECONDS")]
        pub lease: u64 = 24 * 3600,
        /// Seconds before the lease ends at which the "timeout" push is sent (OpenDHT: 2 h).
        #[arg(long, env = "WAYPOST_PROXY_TIMEOUT_MARGIN", value_name = "SECONDS")]
        pub timeout_margin: u64 = 2 * 3600,
        /// Pushes waiting for delivery; more are dropped.
        #[arg(long, env = "WAYPOST_PROXY_PUSH_QUEUE", value_name = "N")]
        pub push_queue: usize = 65_536,
    }
}

/// Validated options the library runs with.
#[derive(Clone)]
pub struct ProxyOptions {
    /// Gateway base URL (`http(s)://host[:port]`), if any.
    pub push_server: Option<String>,
    /// Default topic.
    pub bundle_id: String,
    /// Gateway body format.
    pub push_format: PushFormat,
    /// Where state is kept, if anywhere.
    pub data_dir: Option<PathBuf>,
    /// Limits.
    pub limits: Limits,
    /// Lease and timer durations.
    pub timers: Timers,
    /// Push queue capacity.
    pub push_queue: usize,
    /// Idle keep-alive connections are closed after this long (`None`: never).
    pub idle_timeout: Option<Duration>,
}

/// Resource limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body.
    pub max_body: usize,
    /// Listen streams per IP.
    pub streams_per_ip: usize,
    /// Listen streams in total.
    pub streams: usize,
    /// Subscriptions per IP.
    pub subscriptions_per_ip: usize,
    /// Subscriptions in total.
    pub subscriptions: usize,
    /// Permanent puts in total.
    pub permanent_puts: usize,
}

/// Lease durations (24 h and 2 h in production; shorter in tests).
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// Lease of a permanent put or a subscription after its last POST/SUBSCRIBE.
    pub lease: Duration,
    /// The "timeout" push goes out this long before the lease ends.
    pub margin: Duration,
    /// How often leases are checked.
    pub sweep: Duration,
    /// Push delivery attempts.
    pub push_attempts: u32,
    /// First retry delay (doubled each time).
    pub push_backoff: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(24 * 3600),
            margin: Duration::from_secs(2 * 3600),
            sweep: Duration::from_secs(5),
            push_attempts: 4,
            push_backoff: Duration::from_millis(500),
        }
    }
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self::from_config(&ProxyConfig::default()).unwrap_or_else(|_| Self {
            push_server: None,
            bundle_id: String::new(),
            push_format: PushFormat::V4,
            data_dir: None,
            limits: Limits {
                max_body: 256 * 1024,
                streams_per_ip: 1024,
                streams: 200_000,
                subscriptions_per_ip: 4096,
                subscriptions: 1_000_000,
                permanent_puts: 1_000_000,
            },
            timers: Timers::default(),
            push_queue: 65_536,
            idle_timeout: Some(Duration::from_secs(300)),
        })
    }
}

impl ProxyOptions {
    /// Validates a resolved configuration.
    pub fn from_config(c: &ProxyConfig) -> Result<Self, ProxyError> {
        let push_server = normalize_push_server(&c.push_server)?;
        if c.max_body < 1024 {
            return Err(ProxyError::Config("max-body must be at least 1024".into()));
        }
        for (name, v) in [
            ("max-streams-per-ip", c.max_streams_per_ip),
            ("max-streams", c.max_streams),
            ("max-subscriptions-per-ip", c.max_subscriptions_per_ip),
            ("max-subscriptions", c.max_subscriptions),
            ("max-permanent-puts", c.max_permanent_puts),
            ("push-queue", c.push_queue),
        ] {
            if v == 0 {
                return Err(ProxyError::Config(format!("{name} must be at least 1")));
            }
        }
        if c.tls_listen != AdminAddr::Off
            && (c.cert.as_os_str().is_empty() || c.key.as_os_str().is_empty())
        {
            return Err(ProxyError::Config("tls-listen needs cert and key".into()));
        }
        waypost_net::config::check_admin_addr(c.admin_listen, c.admin_public)
            .map_err(|e| ProxyError::Config(e.to_string()))?;
        if c.lease == 0 || c.timeout_margin >= c.lease {
            return Err(ProxyError::Config(
                "lease must be positive and above timeout-margin".into(),
            ));
        }
        for b in &c.bootstrap {
            if b.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(ProxyError::Config("bootstrap must be HOST:PORT".into()));
            }
        }
        Ok(Self {
            push_server,
            bundle_id: c.bundle_id.clone(),
            push_format: c.push_format,
            data_dir: (!c.data_dir.as_os_str().is_empty()).then(|| c.data_dir.clone()),
            limits: Limits {
                max_body: c.max_body,
                streams_per_ip: c.max_streams_per_ip,
                streams: c.max_streams,
                subscriptions_per_ip: c.max_subscriptions_per_ip,
                subscriptions: c.max_subscriptions,
                permanent_puts: c.max_permanent_puts,
            },
            timers: Timers {
                lease: Duration::from_secs(c.lease),
                margin: Duration::from_secs(c.timeout_margin),
                ..Timers::default()
            },
            push_queue: c.push_queue,
            idle_timeout: (c.idle_timeout > 0).then(|| Duration::from_secs(c.idle_timeout)),
        })
    }
}

/// `host:port`, `:port`, `port` or a URL → `http(s)://host:port` without a trailing slash.
fn normalize_push_server(s: &str) -> Result<Option<String>, ProxyError> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        return Ok(None);
    }
    let url = if s.starts_with("http://") || s.starts_with("https://") {
        s.to_owned()
    } else if s.chars().all(|c| c.is_ascii_digit()) {
        format!("http://localhost:{s}")
    } else if let Some(p) = s.strip_prefix(':') {
        format!("http://localhost:{p}")
    } else {
        format!("http://{s}")
    };
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let bad_port = authority.rsplit_once(':').is_some_and(|(h, p)| {
        h.is_empty() || (!h.ends_with(']') && h.contains(':')) || p.parse::<u16>().is_err()
    });
    if authority.is_empty() || bad_port || rest.contains(char::is_whitespace) {
        return Err(ProxyError::Config("push-server is not a valid URL".into()));
    }
    Ok(Some(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_server_forms() {
        assert_eq!(normalize_push_server("").unwrap(), None);
        assert_eq!(
            normalize_push_server("8090").unwrap().unwrap(),
            "http://localhost:8090"
        );
        assert_eq!(
            normalize_push_server("127.0.0.1:9/").unwrap().unwrap(),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            normalize_push_server("https://gw.example")
                .unwrap()
                .unwrap(),
            "https://gw.example"
        );
        assert!(normalize_push_server("http://").is_err());
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let mut c = ProxyConfig::default();
        assert!(ProxyOptions::from_config(&c).is_ok());
        c.bootstrap = vec!["nohost".into()];
        assert!(ProxyOptions::from_config(&c).is_err());
        let c = ProxyConfig {
            tls_listen: AdminAddr::At("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        assert!(ProxyOptions::from_config(&c).is_err());
        let c = ProxyConfig {
            max_streams: 0,
            ..Default::default()
        };
        assert!(ProxyOptions::from_config(&c).is_err());
        let c = ProxyConfig {
            lease: 60,
            timeout_margin: 60,
            ..Default::default()
        };
        assert!(ProxyOptions::from_config(&c).is_err());
        let c = ProxyConfig {
            lease: 60,
            timeout_margin: 50,
            ..Default::default()
        };
        let o = ProxyOptions::from_config(&c).unwrap();
        assert_eq!(
            (o.timers.lease, o.timers.margin),
            (Duration::from_secs(60), Duration::from_secs(50))
        );
    }
}
