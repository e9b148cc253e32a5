//! 20-byte identifiers: DHT keys (InfoHash) and node ids.

use std::cmp::Ordering;
use std::fmt;

use sha1::{Digest, Sha1};

/// A 20-byte DHT key or node id. `Debug`/`Display` never print the bytes (logless policy); use
/// [`InfoHash::to_hex`] where the text form is really needed (CLI output, tests).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InfoHash(<redacted>)")
    }
}

impl InfoHash {
    /// Length in bytes.
    pub const LEN: usize = 20;

    /// The all-zero hash (unknown node id).
    pub const ZERO: Self = Self([0; 20]);

    /// SHA-1 of `data` (OpenDHT `InfoHash::get`).
    pub fn get(data: impl AsRef<[u8]>) -> Self {
        let out: [u8; 20] = Sha1::digest(data.as_ref()).into();
        Self(out)
    }

    /// A random hash.
    pub fn random(rng: &mut (impl rand::RngCore + ?Sized)) -> Self {
        let mut b = [0u8; 20];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// From a slice of exactly 20 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 20]>::try_from(b).ok().map(Self)
    }

    /// Parses 40 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s.trim()).ok()?;
        Self::from_slice(&v)
    }

    /// Key for a user string as dhtnode does it: 40 hex digits are taken as the hash itself,
    /// anything else is hashed with SHA-1.
    pub fn from_user_key(s: &str) -> Self {
        Self::from_hex(s).unwrap_or_else(|| Self::get(s.as_bytes()))
    }

    /// 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether every byte is zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 20]
    }

    /// Raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// XOR distance to `other`.
    pub fn xor(&self, other: &Self) -> Self {
        let mut r = [0u8; 20];
        for (i, b) in r.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Self(r)
    }

    /// Compares the distances of `a` and `b` to `self` (closer first).
    pub fn xor_cmp(&self, a: &Self, b: &Self) -> Ordering {
        for i in 0..20 {
            let da = a.0[i] ^ self.0[i];
            let db = b.0[i] ^ self.0[i];
            if da != db {
                return da.cmp(&db);
            }
        }
        Ordering::Equal
    }

    /// Number of leading bits `self` and `other` share.
    pub fn common_bits(&self, other: &Self) -> usize {
        for i in 0..20 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }

    /// Bit `i` (0 = most significant).
    pub fn bit(&self, i: usize) -> bool {
        i < 160 && (self.0[i / 8] >> (7 - (i % 8))) & 1 == 1
    }

    /// Returns a copy with bit `i` set to `v`.
    pub fn with_bit(mut self, i: usize, v: bool) -> Self {
        if i < 160 {
            let mask = 1u8 << (7 - (i % 8));
            if v {
                self.0[i / 8] |= mask;
            } else {
                self.0[i / 8] &= !mask;
            }
        }
        self
    }

    /// Keeps the first `depth` bits of `self` and takes the rest from `rest`.
    pub fn with_prefix_of(&self, depth: usize, rest: &Self) -> Self {
        let mut out = *rest;
        for i in 0..depth.min(160) {
            out = out.with_bit(i, self.bit(i));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_of_testkey_and_hex() {
        let h = InfoHash::get(b"testkey");
        assert_eq!(h.to_hex(), "913a73b565c8e2c8ed94497580f619397709b8b6");
        assert_eq!(InfoHash::from_user_key("testkey"), h);
        assert_eq!(InfoHash::from_user_key(&h.to_hex()), h);
        assert_eq!(format!("{h:?}"), "InfoHash(<redacted>)");
    }

    #[test]
    fn distance_and_bits() {
        let z = InfoHash::ZERO;
        let a = InfoHash::ZERO.with_bit(0, true);
        let b = InfoHash::ZERO.with_bit(159, true);
        assert_eq!(z.xor_cmp(&b, &a), Ordering::Less);
        assert_eq!(z.common_bits(&a), 0);
        assert_eq!(z.common_bits(&b), 159);
        assert!(a.bit(0) && !a.bit(1));
        assert_eq!(
            a.with_prefix_of(1, &b),
            InfoHash::ZERO.with_bit(0, true).with_bit(159, true)
        );
    }
}
