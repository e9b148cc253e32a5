//! The privacy canary.
//!
//! A test plants distinctive fake identifiers (a loopback source address and port, a username, a
//! push token, an InfoHash, a name, a key), drives traffic through a real server process with
//! them, and then checks that none of them appears in the server's standard output, standard
//! error, any file it wrote, or any other text the test collected (such as `/metrics`).
//! Log output is also checked for any IPv4 or IPv6 address at all.
//!
//! ```ignore
//! let canary = Canary::new();
//! let mut server = Watched::spawn(cmd)?;          // run with --log-level trace
//! let sock = canary.udp_socket();                   // traffic comes from the canary address
//! // ... drive traffic using canary.username, canary.token, ...
//! server.terminate(Duration::from_secs(5));
//! canary.assert_clean(&[Source::log("stdout", &server.stdout()),
//!                       Source::log("stderr", &server.stderr())]
//!                       .into_iter().chain(Source::files_under(data_dir)).collect::<Vec<_>>());
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;

use rand_like::Rng;

/// Where scanned bytes came from, and how to scan them.
#[derive(Clone, Debug)]
pub struct Source {
    label: String,
    bytes: Vec<u8>,
    /// Logs must hold no address at all; files and other outputs only no planted value.
    is_log: bool,
}

impl Source {
    /// Log output (standard output or error): checked for planted values and for any address.
    pub fn log(label: &str, bytes: &[u8]) -> Self {
        Self {
            label: label.to_owned(),
            bytes: bytes.to_vec(),
            is_log: true,
        }
    }

    /// Any other output (a file the server wrote, a metrics page, an error body).
    pub fn other(label: &str, bytes: &[u8]) -> Self {
        Self {
            label: label.to_owned(),
            bytes: bytes.to_vec(),
            is_log: false,
        }
    }

    /// Every regular file below `dir`, recursively.
    pub fn files_under(dir: &Path) -> Vec<Self> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    out.push(Self::other(&format!("file {}", p.display()), &bytes));
                }
            }
        }
        out
    }
}

/// Planted identifiers. Every value is random per test run, so a leak cannot be a coincidence.
#[derive(Clone, Debug)]
pub struct Canary {
    /// A loopback alias (127.x.y.z, not 127.0.0.1) that test traffic is sent from.
    pub ip: Ipv4Addr,
    /// The source port test traffic is sent from.
    pub port: u16,
    /// A username (TURN user, account name).
    pub username: String,
    /// A push token.
    pub token: String,
    /// A 40-hex-digit InfoHash / Jami ID.
    pub infohash: String,
    /// A registrable name (lowercase).
    pub name: String,
    /// Key material (a password, a shared secret).
    pub key: String,
    extra: Vec<(String, String)>,
}

impl Default for Canary {
    fn default() -> Self {
        Self::new()
    }
}

impl Canary {
    /// Fresh random canaries.
    pub fn new() -> Self {
        let mut r = Rng::seeded();
        let ip = Ipv4Addr::new(
            127,
            r.range(100, 250) as u8,
            r.range(1, 250) as u8,
            r.range(2, 250) as u8,
        );
        let port = r.range(20_000, 60_000) as u16;
        Self {
            ip,
            port,
            username: format!("canary-user-{}", r.hex(8)),
            token: format!("canarytoken{}", r.hex(24)),
            infohash: r.hex(40),
            name: format!("canary{}", r.hex(8)),
            key: format!("canarykey{}", r.hex(16)),
            extra: Vec::new(),
        }
    }

    /// Plants one more value (for example a generated public key in the form the test sends).
    pub fn plant(&mut self, label: &str, value: &str) {
        self.extra.push((label.to_owned(), value.to_owned()));
    }

    /// The canary source address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.port)
    }

    /// A UDP socket bound to the canary address (falls back to another port on the canary IP if
    /// the port is taken).
    pub fn udp_socket(&self) -> UdpSocket {
        UdpSocket::bind(self.addr())
            .or_else(|_| UdpSocket::bind((self.ip, 0)))
            .expect("bind the canary loopback alias")
    }

    /// A TCP connection to `to` from the canary address.
    pub fn tcp_connect(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.bind(&SocketAddr::new(IpAddr::V4(self.ip), 0).into())?;
        sock.connect(&to.into())?;
        Ok(sock.into())
    }

    /// The planted values with their labels, in the textual forms searched for.
    pub fn needles(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("ip".to_owned(), self.ip.to_string()),
            ("username".to_owned(), self.username.clone()),
            ("token".to_owned(), self.token.clone()),
            ("infohash".to_owned(), self.infohash.clone()),
            (
                "infohash (upper case)".to_owned(),
                self.infohash.to_uppercase(),
            ),
            ("name".to_owned(), self.name.clone()),
            ("key".to_owned(), self.key.clone()),
        ];
        v.extend(self.extra.iter().cloned());
        v
    }

    /// Every leak found in `sources`, as human-readable lines.
    pub fn find_leaks(&self, sources: &[Source]) -> Vec<String> {
        let mut leaks = Vec::new();
        for src in sources {
            let text = String::from_utf8_lossy(&src.bytes);
            for (label, needle) in self.needles() {
                if !needle.is_empty() && text.contains(&needle) {
                    leaks.push(format!("{}: planted {label}", src.label));
                }
            }
            if contains_number(&text, u32::from(self.port)) {
                leaks.push(format!("{}: planted port", src.label));
            }
            let octets = self.ip.octets();
            if src.bytes.windows(4).any(|w| w == octets) {
                leaks.push(format!("{}: planted ip (binary)", src.label));
            }
            if src.is_log {
                if let Some(addr) = find_ipv4(&text) {
                    leaks.push(format!("{}: an IPv4 address ({addr})", src.label));
                }
                if let Some(addr) = find_ipv6(&text) {
                    leaks.push(format!("{}: an IPv6 address ({addr})", src.label));
                }
            }
        }
        leaks
    }

    /// Panics with the list of leaks if any planted value or address is found.
    pub fn assert_clean(&self, sources: &[Source]) {
        let leaks = self.find_leaks(sources);
        assert!(
            leaks.is_empty(),
            "privacy canary found leaks:\n  {}",
            leaks.join("\n  ")
        );
    }
}

/// Whether `text` holds `n` as a whole number (not part of a longer digit run).
fn contains_number(text: &str, n: u32) -> bool {
    let needle = n.to_string();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find(&needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before = start == 0 || !bytes[start - 1].is_ascii_digit();
        let after = end == bytes.len() || !bytes[end].is_ascii_digit();
        if before && after {
            return true;
        }
        from = start + 1;
    }
    false
}

/// The first dotted-quad IPv4 address in `text`, if any.
pub fn find_ipv4(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.')) {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            let cand = text[i..j].trim_end_matches('.');
            if cand.parse::<Ipv4Addr>().is_ok() {
                return Some(cand.to_owned());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

/// The first IPv6 address in `text` with at least two colons that parses (`::1`, `fe80::…`).
pub fn find_ipv6(text: &str) -> Option<String> {
    for word in text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.')) {
        let w = word.trim_matches(':');
        let w = if word.starts_with("::") { word } else { w };
        if w.matches(':').count() >= 2 && w.parse::<std::net::Ipv6Addr>().is_ok() {
            return Some(w.to_owned());
        }
    }
    None
}

/// A tiny non-cryptographic generator seeded from the clock and the process id: canary values only
/// need to be unlikely to occur by chance.
mod rand_like {
    pub(super) struct Rng(u64);

    impl Rng {
        pub(super) fn seeded() -> Self {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            Self(t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15)
        }

        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next() % (hi - lo)
        }

        pub(super) fn hex(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| char::from(b"0123456789abcdef"[(self.next() % 16) as usize]))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_planted_values_and_addresses() {
        let c = Canary::new();
        let clean = "2026-11-30T19:25:11.123456Z WARN relay refused count=3 version 4.6.1\n";
        assert!(
            c.find_leaks(&[Source::log("stdout", clean.as_bytes())])
                .is_empty()
        );
        let leaky = format!("WARN refused {}:{}\n", c.ip, c.port);
        let leaks = c.find_leaks(&[Source::log("stdout", leaky.as_bytes())]);
        assert!(leaks.iter().any(|l| l.contains("planted ip")), "{leaks:?}");
        assert!(
            leaks.iter().any(|l| l.contains("planted port")),
            "{leaks:?}"
        );
        let other_ip = c.find_leaks(&[Source::log("stderr", b"from 10.1.2.3 ok")]);
        assert!(other_ip.iter().any(|l| l.contains("IPv4")), "{other_ip:?}");
        let v6 = c.find_leaks(&[Source::log("stderr", b"peer [fe80::1]:5 gone")]);
        assert!(v6.iter().any(|l| l.contains("IPv6")), "{v6:?}");
        let file = c.find_leaks(&[Source::other("file", c.token.as_bytes())]);
        assert_eq!(file.len(), 1, "{file:?}");
        let binary = c.find_leaks(&[Source::other(
            "file",
            &[
                0,
                127,
                c.ip.octets()[1],
                c.ip.octets()[2],
                c.ip.octets()[3],
                0,
            ],
        )]);
        assert!(!binary.is_empty());
    }

    #[test]
    fn port_match_needs_digit_boundaries() {
        assert!(contains_number("port 4567 x", 4567));
        assert!(!contains_number("45678", 4567));
        assert!(!contains_number("14567", 4567));
        assert!(find_ipv4("version 1.2.3").is_none());
        assert_eq!(find_ipv4("at 192.0.2.1:80").as_deref(), Some("192.0.2.1"));
        assert!(
            find_ipv6("12:30:45 time").is_none(),
            "a clock is not an address"
        );
    }
}
