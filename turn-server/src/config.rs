//! Configuration: flags, TOML keys and environment variables, validated before binding.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use waypost_net::config::AdminAddr;

use crate::TurnError;

waypost_net::layered_config! {
    /// The TURN server's configuration as given (defaults < file < environment < flags).
    pub struct TurnConfig / TurnLayer {
        /// UDP and TCP listen address (repeatable).
        #[arg(long = "listen", env = "WAYPOST_TURN_LISTEN", value_delimiter = ',')]
        pub listen: Vec<SocketAddr> = vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
        /// TLS listen address (repeatable); needs --cert and --key.
        #[arg(long = "tls-listen", env = "WAYPOST_TURN_TLS_LISTEN", value_delimiter = ',')]
        pub tls_listen: Vec<SocketAddr> = Vec::new(),
        /// TLS certificate chain (PEM). Reloaded on SIGHUP.
        #[arg(long, env = "WAYPOST_TURN_CERT", value_name = "PEM")]
        pub cert: Option<PathBuf> = None,
        /// TLS private key (PEM).
        #[arg(long, env = "WAYPOST_TURN_KEY", value_name = "PEM")]
        pub key: Option<PathBuf> = None,
        /// Relay address (repeatable, one per family). Default: the listen address if it is
        /// specific, otherwise 127.0.0.1 is refused and you must set it.
        #[arg(long = "relay-ip", env = "WAYPOST_TURN_RELAY_IP", value_delimiter = ',')]
        pub relay_ip: Vec<IpAddr> = Vec::new(),
        /// Lowest relay port.
        #[arg(long, env = "WAYPOST_TURN_MIN_PORT")]
        pub min_port: u16 = 49152,
        /// Highest relay port.
        #[arg(long, env = "WAYPOST_TURN_MAX_PORT")]
        pub max_port: u16 = 65535,
        /// Realm sent to clients.
        #[arg(long, env = "WAYPOST_TURN_REALM")]
        pub realm: String = "ring".to_owned(),
        /// Static long-term user NAME:PASS (repeatable). Jami's default is ring:ring.
        #[arg(long = "user", env = "WAYPOST_TURN_USER", value_delimiter = ',')]
        pub user: Vec<String> = vec!["ring:ring".to_owned()],
        /// REST API shared secret (repeatable, for rotation): username `expiry:user`,
        /// password base64(HMAC-SHA1(secret, username)).
        #[arg(long = "auth-secret", env = "WAYPOST_TURN_AUTH_SECRET", value_delimiter = ',')]
        pub auth_secret: Vec<String> = Vec::new(),
        /// Allow relaying to loopback peers (tests only).
        #[arg(long, env = "WAYPOST_TURN_ALLOW_LOOPBACK_PEERS", num_args = 0..=1, default_missing_value = "true")]
        pub allow_loopback_peers: bool = false,
        /// Peer range allowed despite the default deny list (repeatable), e.g. 192.168.0.0/16.
        #[arg(long = "allowed-peer", env = "WAYPOST_TURN_ALLOWED_PEER", value_delimiter = ',')]
        pub allowed_peer: Vec<IpNet> = Vec::new(),
        /// Extra peer range to deny (repeatable).
        #[arg(long = "denied-peer", env = "WAYPOST_TURN_DENIED_PEER", value_delimiter = ',')]
        pub denied_peer: Vec<IpNet> = Vec::new(),
        /// Admin HTTP listener (/metrics, /healthz, /readyz), or `off`. Loopback only unless
        /// `admin-public` is set.
        #[arg(long, env = "WAYPOST_TURN_ADMIN_LISTEN")]
        pub admin_listen: AdminAddr = AdminAddr::Off,
        /// Allow a non-loopback admin listener (for example a pod IP scraped by Prometheus).
        #[arg(long, env = "WAYPOST_TURN_ADMIN_PUBLIC", num_args = 0..=1, default_missing_value = "true")]
        pub admin_public: bool = false,
        /// Maximum allocations per client IP (IPv6: per /64).
        #[arg(long, env = "WAYPOST_TURN_MAX_ALLOCATIONS_PER_IP")]
        pub max_allocations_per_ip: u32 = 128,
        /// Maximum open TCP/TLS connections per client IP (IPv6: per /64), control and data.
        #[arg(long, env = "WAYPOST_TURN_MAX_CONNECTIONS_PER_IP")]
        pub max_connections_per_ip: u32 = 256,
        /// Maximum allocations in total.
        #[arg(long, env = "WAYPOST_TURN_MAX_ALLOCATIONS")]
        pub max_allocations: u32 = 20000,
        /// Maximum permissions per allocation.
        #[arg(long, env = "WAYPOST_TURN_MAX_PERMISSIONS")]
        pub max_permissions: u32 = 1024,
        /// Maximum relayed bytes per second per client IP, 0 for unlimited.
        #[arg(long, env = "WAYPOST_TURN_MAX_BPS_PER_IP")]
        pub max_bps_per_ip: u64 = 0,
        /// Maximum 401/438 answers per second per client IP; more are dropped silently.
        #[arg(long, env = "WAYPOST_TURN_UNAUTH_RATE")]
        pub unauth_rate: u32 = 200,
        /// Maximum allocation lifetime in seconds.
        #[arg(long, env = "WAYPOST_TURN_MAX_LIFETIME")]
        pub max_lifetime: u32 = 3600,
        /// Nonce lifetime in seconds.
        #[arg(long, env = "WAYPOST_TURN_NONCE_LIFETIME")]
        pub nonce_lifetime: u32 = 600,
        /// UDP receive shards per listen address (SO_REUSEPORT), 0 = one per CPU.
        #[arg(long, env = "WAYPOST_TURN_SHARDS")]
        pub shards: u32 = 0,
        /// Seconds to drain on SIGTERM.
        #[arg(long, env = "WAYPOST_TURN_DRAIN_SECONDS")]
        pub drain_seconds: u64 = 5,
        /// SOFTWARE attribute in responses after authentication (empty for none).
        #[arg(long, env = "WAYPOST_TURN_SOFTWARE")]
        pub software: String = String::new(),
    }
}

/// A static user.
#[derive(Clone)]
pub struct User {
    /// Username bytes.
    pub name: String,
    /// MD5 long-term key for the realm.
    pub key: [u8; 16],
}

/// The validated runtime settings.
#[derive(Clone)]
pub struct Settings {
    /// UDP+TCP listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// Certificate and key.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Relay IPs (at most one per family).
    pub relay_v4: Option<IpAddr>,
    /// IPv6 relay.
    pub relay_v6: Option<IpAddr>,
    /// Relay port range.
    pub ports: (u16, u16),
    /// Realm.
    pub realm: String,
    /// Static users.
    pub users: Vec<User>,
    /// REST secrets.
    pub secrets: Vec<Vec<u8>>,
    /// Peer filter.
    pub filter: crate::filter::PeerFilter,
    /// Admin listener.
    pub admin: AdminAddr,
    /// Quotas.
    pub max_allocations_per_ip: u32,
    /// Total allocations.
    pub max_allocations: u32,
    /// TCP/TLS connections per IP.
    pub max_connections_per_ip: u32,
    /// Permissions per allocation.
    pub max_permissions: u32,
    /// Bytes per second per IP.
    pub max_bps_per_ip: u64,
    /// 401s per second per IP.
    pub unauth_rate: u32,
    /// Max lifetime.
    pub max_lifetime: u32,
    /// Nonce lifetime.
    pub nonce_lifetime: u32,
    /// Shards.
    pub shards: usize,
    /// Drain time.
    pub drain_seconds: u64,
    /// SOFTWARE.
    pub software: String,
}

/// The address the host would use towards the Internet (a UDP `connect` sends nothing), or
/// 127.0.0.1 when there is no route.
fn default_relay_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or_else(|| IpAddr::from([127, 0, 0, 1]))
}

fn invalid(msg: &str) -> TurnError {
    TurnError::Config(msg.to_owned())
}

impl TurnConfig {
    /// Validates into runtime settings. Errors never echo secrets.
    pub fn validate(&self) -> Result<Settings, TurnError> {
        if self.listen.is_empty() && self.tls_listen.is_empty() {
            return Err(invalid(
                "at least one listen or tls-listen address is needed",
            ));
        }
        let tls_files = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err(invalid("cert and key must be given together")),
        };
        if !self.tls_listen.is_empty() && tls_files.is_none() {
            return Err(invalid("tls-listen needs cert and key"));
        }
        if self.min_port == 0 || self.min_port > self.max_port {
            return Err(invalid("min-port must be between 1 and max-port"));
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return Err(invalid("realm must be 1 to 127 bytes"));
        }
        let mut relay_v4 = None;
        let mut relay_v6 = None;
        for ip in &self.relay_ip {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(invalid("relay-ip must be a unicast address"));
            }
            let slot = if ip.is_ipv4() {
                &mut relay_v4
            } else {
                &mut relay_v6
            };
            if slot.replace(*ip).is_some() {
                return Err(invalid("at most one relay-ip per address family"));
            }
        }
        if relay_v4.is_none() && relay_v6.is_none() {
            // Default: a specific listen address doubles as the relay address.
            for a in self.listen.iter().chain(&self.tls_listen) {
                let ip = a.ip();
                if !ip.is_unspecified() {
                    let slot = if ip.is_ipv4() {
                        &mut relay_v4
                    } else {
                        &mut relay_v6
                    };
                    slot.get_or_insert(ip);
                }
            }
        }
        if relay_v4.is_none() && relay_v6.is_none() {
            relay_v4 = Some(default_relay_ip());
        }
        let mut users = Vec::new();
        for u in &self.user {
            let Some((name, pass)) = u.split_once(':') else {
                return Err(invalid("user must be NAME:PASSWORD"));
            };
            if name.is_empty() || name.len() > 255 {
                return Err(invalid("user name must be 1 to 255 bytes"));
            }
            let key = waypost_protocol::stun::auth::long_term_key(
                name.as_bytes(),
                self.realm.as_bytes(),
                pass.as_bytes(),
            );
            users.push(User {
                name: name.to_owned(),
                key,
            });
        }
        if users.is_empty() && self.auth_secret.is_empty() {
            return Err(invalid(
                "no credentials: give at least one user or auth-secret",
            ));
        }
        if self.auth_secret.iter().any(String::is_empty) {
            return Err(invalid("auth-secret must not be empty"));
        }
        waypost_net::config::check_admin_addr(self.admin_listen, self.admin_public)
            .map_err(|e| TurnError::Config(e.to_string()))?;
        if self.max_lifetime < 60 {
            return Err(invalid("max-lifetime must be at least 60 seconds"));
        }
        let shards = if self.shards == 0 {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(16)
        } else {
            usize::try_from(self.shards.min(64)).unwrap_or(1)
        };
        Ok(Settings {
            listen: self.listen.clone(),
            tls_listen: self.tls_listen.clone(),
            tls_files,
            relay_v4,
            relay_v6,
            ports: (self.min_port, self.max_port),
            realm: self.realm.clone(),
            users,
            secrets: self
                .auth_secret
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            filter: crate::filter::PeerFilter::new(
                self.allow_loopback_peers,
                self.allowed_peer.clone(),
                self.denied_peer.clone(),
            ),
            admin: self.admin_listen,
            max_allocations_per_ip: self.max_allocations_per_ip,
            max_allocations: self.max_allocations,
            max_connections_per_ip: self.max_connections_per_ip,
            max_permissions: self.max_permissions,
            max_bps_per_ip: self.max_bps_per_ip,
            unauth_rate: self.unauth_rate,
            max_lifetime: self.max_lifetime,
            nonce_lifetime: self.nonce_lifetime.max(1),
            shards,
            drain_seconds: self.drain_seconds,
            software: self.software.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_jami_defaults() {
        let s = TurnConfig::default().validate().unwrap();
        assert_eq!(s.listen, vec!["0.0.0.0:3478".parse().unwrap()]);
        assert_eq!(s.realm, "ring");
        assert_eq!(s.users.len(), 1);
        assert_eq!(s.users[0].name, "ring");
        assert!(!s.filter.allows("127.0.0.1:1".parse().unwrap()));
    }

    #[test]
    fn invalid_values_are_refused() {
        let c = TurnConfig {
            min_port: 5000,
            max_port: 4000,
            ..TurnConfig::default()
        };
        assert!(c.validate().is_err());
        let c = TurnConfig {
            user: vec!["nocolon".into()],
            ..TurnConfig::default()
        };
        assert!(c.validate().is_err());
        let c = TurnConfig {
            tls_listen: vec!["127.0.0.1:5349".parse().unwrap()],
            ..TurnConfig::default()
        };
        assert!(c.validate().is_err());
        let c = TurnConfig {
            relay_ip: vec!["0.0.0.0".parse().unwrap()],
            ..TurnConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
