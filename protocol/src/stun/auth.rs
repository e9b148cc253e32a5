//! Long-term credentials (RFC 8489 §9.2), the TURN REST API shared secret, and stateless nonces.
//!
//! The nonce is `base64(issue time || HMAC-SHA256(secret, time || client IP)[..5])`: the server
//! keeps no state per client before authentication and can still tell a forged nonce (401) from
//! a stale one (438).

use std::net::IpAddr;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// The MD5 long-term key: `MD5(username ":" realm ":" password)`.
///
/// Passwords are used as given (OpaqueString is the identity on ASCII passwords).
pub fn long_term_key(username: &[u8], realm: &[u8], password: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username);
    h.update(b":");
    h.update(realm);
    h.update(b":");
    h.update(password);
    h.finalize().into()
}

/// The SHA-256 long-term key (PASSWORD-ALGORITHM 0x0002).
pub fn long_term_key_sha256(username: &[u8], realm: &[u8], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    sha2::Digest::update(&mut h, username);
    sha2::Digest::update(&mut h, b":");
    sha2::Digest::update(&mut h, realm);
    sha2::Digest::update(&mut h, b":");
    sha2::Digest::update(&mut h, password);
    h.finalize().into()
}

/// USERHASH: `SHA-256(username ":" realm)`.
pub fn userhash(username: &[u8], realm: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    sha2::Digest::update(&mut h, username);
    sha2::Digest::update(&mut h, b":");
    sha2::Digest::update(&mut h, realm);
    h.finalize().into()
}

/// The REST API password for `username` under `secret`: `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(username);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The expiry (Unix seconds) of a REST API username `expiry[:user]`, if it has that form.
pub fn rest_expiry(username: &[u8]) -> Option<u64> {
    let ts = username.split(|&b| b == b':').next()?;
    if ts.is_empty() || ts.len() > 20 || !ts.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(ts).ok()?.parse().ok()
}

/// Result of checking a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, for this client, and fresh.
    Valid,
    /// Ours and for this client, but too old: answer 438.
    Stale,
    /// Not a nonce we issued to this client: answer 401.
    Invalid,
}

/// Length in bytes of the nonces [`NonceKey::issue`] makes: base64 of a 32-bit issue time and a
/// 40-bit tag. Short on purpose: a 401 answer must not be larger than the request it answers.
pub const NONCE_LEN: usize = 12;

/// Issues and checks stateless nonces.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
}

impl NonceKey {
    /// A key from random bytes (draw them from the OS at start-up).
    pub fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    fn tag(&self, ts: u32, ip: IpAddr) -> [u8; 5] {
        let mut out = [0u8; 5];
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) else {
            return out;
        };
        mac.update(&ts.to_be_bytes());
        match canonical_ip(ip) {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        out.copy_from_slice(&mac.finalize().into_bytes()[..5]);
        out
    }

    /// A nonce for `ip` issued at `now` (Unix seconds).
    pub fn issue(&self, now: u64, ip: IpAddr) -> [u8; NONCE_LEN] {
        let ts = u32::try_from(now).unwrap_or(u32::MAX);
        let mut raw = [0u8; 9];
        raw[..4].copy_from_slice(&ts.to_be_bytes());
        raw[4..].copy_from_slice(&self.tag(ts, ip));
        let mut out = [0u8; NONCE_LEN];
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(raw, &mut out);
        out
    }

    /// Checks a nonce received from `ip` at `now`; nonces live `lifetime` seconds.
    pub fn check(&self, nonce: &[u8], now: u64, ip: IpAddr, lifetime: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let mut raw = [0u8; 9];
        match base64::engine::general_purpose::STANDARD.decode_slice(nonce, &mut raw) {
            Ok(9) => {}
            _ => return NonceCheck::Invalid,
        }
        let ts = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let want = self.tag(ts, ip);
        // Constant-time comparison.
        let diff = want
            .iter()
            .zip(raw[4..].iter())
            .fold(0u8, |a, (x, y)| a | (x ^ y));
        if diff != 0 {
            return NonceCheck::Invalid;
        }
        let ts = u64::from(ts);
        if ts > now + 5 || now - ts.min(now) > lifetime {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, everything else unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_valid_stale_invalid() {
        let k = NonceKey::new([3; 32]);
        let ip: IpAddr = "192.0.2.5".parse().unwrap();
        let n = k.issue(1000, ip);
        assert_eq!(k.check(&n, 1010, ip, 600), NonceCheck::Valid);
        assert_eq!(k.check(&n, 1700, ip, 600), NonceCheck::Stale);
        assert_eq!(
            k.check(&n, 1010, "192.0.2.6".parse().unwrap(), 600),
            NonceCheck::Invalid
        );
        assert_eq!(
            k.check(&n, 1010, "::ffff:192.0.2.5".parse().unwrap(), 600),
            NonceCheck::Valid
        );
        let mut bad = n;
        bad[10] ^= 1;
        assert_eq!(k.check(&bad, 1010, ip, 600), NonceCheck::Invalid);
        assert_eq!(k.check(b"short", 1010, ip, 600), NonceCheck::Invalid);
        assert_eq!(
            NonceKey::new([4; 32]).check(&n, 1010, ip, 600),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn rest_credentials() {
        assert_eq!(rest_expiry(b"1700000000:alice"), Some(1_700_000_000));
        assert_eq!(rest_expiry(b"1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry(b"ring"), None);
        assert_eq!(rest_expiry(b":x"), None);
        // HMAC-SHA1 of the empty message under the empty key (a well-known value).
        assert_eq!(rest_password(b"", b""), "+9sdGxiqbAgyS31ktx+3Y3BpDh0=");
    }
}
