//! The peer-address filter: which addresses a client may relay to (or accept TCP peers from).
//!
//! Default deny: loopback, 0.0.0.0/8, ::, private (RFC 1918), CGNAT, link-local, ULA, site-local,
//! multicast, broadcast, reserved, documentation and benchmarking ranges, and NAT64/6to4/Teredo
//! prefixes that embed such addresses. IPv4-mapped IPv6 is canonicalised before checking.
//! `--allowed-peer` ranges override the deny list (except the unspecified addresses);
//! `--allow-loopback-peers` adds 127.0.0.0/8 and ::1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use waypost_protocol::stun::auth::canonical_ip;

/// Decides whether a peer address is allowed.
#[derive(Clone)]
pub struct PeerFilter {
    allow_loopback: bool,
    allowed: Vec<IpNet>,
    denied: Vec<IpNet>,
}

fn v4_denied(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
}

fn v6_denied(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 (embeds IPv4)
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || s[0] == 0x2002 // 6to4
        || ip.to_ipv4().is_some() // ::/96 compatible and ::ffff:0:0/96 (already mapped)
}

impl PeerFilter {
    /// A filter with the default deny list and the given overrides.
    pub fn new(allow_loopback: bool, allowed: Vec<IpNet>, denied: Vec<IpNet>) -> Self {
        Self {
            allow_loopback,
            allowed,
            denied,
        }
    }

    /// Whether relaying to (or accepting from) `addr` is allowed.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        if addr.port() == 0 {
            return false;
        }
        self.allows_ip(addr.ip())
    }

    /// Whether the IP is allowed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        if ip.is_unspecified() {
            return false;
        }
        if self.denied.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback || self.allowed.iter().any(|n| n.contains(&ip));
        }
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => !v4_denied(v4),
            IpAddr::V6(v6) => !v6_denied(v6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_denies_dangerous_peers() {
        let f = PeerFilter::new(false, vec![], vec![]);
        for s in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "[::ffff:127.0.0.1]:80",
            "[::1]:80",
            "[::]:80",
            "169.254.169.254:80",
            "[fc00::1]:80",
            "[fe80::1]:80",
            "10.1.2.3:80",
            "172.16.0.1:80",
            "192.168.1.1:80",
            "100.64.0.1:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[ff02::1]:80",
            "[64:ff9b::7f00:1]:80",
            "[::ffff:10.0.0.1]:80",
            "[::127.0.0.1]:80",
            "198.51.100.7:80",
            "8.8.8.8:0",
        ] {
            assert!(!f.allows(a(s)), "{s} must be denied");
        }
        for s in ["8.8.8.8:53", "[2a00:1450::1]:443", "[::ffff:8.8.8.8]:53"] {
            assert!(f.allows(a(s)), "{s} must be allowed");
        }
    }

    #[test]
    fn overrides() {
        let f = PeerFilter::new(
            true,
            vec!["192.168.0.0/16".parse().unwrap()],
            vec!["8.8.8.0/24".parse().unwrap()],
        );
        assert!(f.allows(a("127.0.0.1:80")));
        assert!(f.allows(a("[::ffff:127.0.0.1]:80")));
        assert!(f.allows(a("[::1]:80")));
        assert!(f.allows(a("192.168.3.4:80")));
        assert!(!f.allows(a("0.0.0.0:80")), "unspecified is never allowed");
        assert!(!f.allows(a("8.8.8.8:80")));
        assert!(!f.allows(a("10.0.0.1:80")));
    }
}
