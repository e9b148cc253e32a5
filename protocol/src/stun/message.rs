//! The STUN message reader and writer.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::attr;

/// The magic cookie of RFC 5389/8489.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// The value XORed into the CRC-32 of FINGERPRINT.
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Why bytes are not a valid STUN message. No variant carries input data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Shorter than a header, or than its declared length.
    #[error("truncated STUN message")]
    Truncated,
    /// Not STUN: leading bits or magic cookie wrong.
    #[error("not a STUN message")]
    NotStun,
    /// The header length is not a multiple of 4 or disagrees with the datagram size.
    #[error("bad STUN message length")]
    BadLength,
    /// An attribute runs past the end of the message.
    #[error("malformed STUN attribute")]
    BadAttribute,
    /// Not a ChannelData or STUN frame (stream transports).
    #[error("unknown frame type")]
    BadFrame,
}

/// The class of a STUN message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request.
    Request,
    /// An indication.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Self::Request => 0x0000,
            Self::Indication => 0x0010,
            Self::Success => 0x0100,
            Self::Error => 0x0110,
        }
    }

    fn from_type(t: u16) -> Self {
        match t & 0x0110 {
            0x0000 => Self::Request,
            0x0010 => Self::Indication,
            0x0100 => Self::Success,
            _ => Self::Error,
        }
    }
}

/// Builds the 14-bit message type from a method and a class.
pub fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0fff;
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | class.bits()
}

fn method_of(t: u16) -> u16 {
    (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Whether `buf` starts like a STUN message (leading zero bits and the magic cookie).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xc0 == 0
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

/// On a stream transport, the length of the frame that starts `buf`: a STUN message or a
/// ChannelData message padded to 4 bytes (RFC 8656 §12.5). `Ok(None)` if more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, StunError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(be16(buf, 2));
    match buf[0] >> 6 {
        0 => {
            if len % 4 != 0 {
                return Err(StunError::BadLength);
            }
            Ok(Some(HEADER_LEN + len))
        }
        1 => Ok(Some(4 + len.div_ceil(4) * 4)),
        _ => Err(StunError::BadFrame),
    }
}

/// A validated STUN message borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    typ: u16,
    /// End of the attributes a receiver may use: the start of MESSAGE-INTEGRITY(-SHA256) or
    /// FINGERPRINT, whichever comes first, or the end of the message.
    attrs_end: usize,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
}

impl<'a> Message<'a> {
    /// Validates a whole STUN message (exactly one datagram or one stream frame).
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::Truncated);
        }
        if !is_stun(buf) {
            return Err(StunError::NotStun);
        }
        let len = usize::from(be16(buf, 2));
        if len % 4 != 0 || HEADER_LEN + len != buf.len() {
            return Err(StunError::BadLength);
        }
        let mut msg = Self {
            buf,
            typ: be16(buf, 0),
            attrs_end: buf.len(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        let mut at = HEADER_LEN;
        while at < buf.len() {
            if at + 4 > buf.len() {
                return Err(StunError::BadAttribute);
            }
            let t = be16(buf, at);
            let vlen = usize::from(be16(buf, at + 2));
            let next = at + 4 + vlen.div_ceil(4) * 4;
            if next > buf.len() {
                return Err(StunError::BadAttribute);
            }
            if msg.fingerprint.is_none() {
                match t {
                    attr::MESSAGE_INTEGRITY
                        if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                    {
                        if vlen != 20 {
                            return Err(StunError::BadAttribute);
                        }
                        msg.integrity = Some(at);
                        msg.attrs_end = msg.attrs_end.min(at);
                    }
                    attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                        if !(16..=32).contains(&vlen) || vlen % 4 != 0 {
                            return Err(StunError::BadAttribute);
                        }
                        msg.integrity_sha256 = Some(at);
                        msg.attrs_end = msg.attrs_end.min(at);
                    }
                    attr::FINGERPRINT => {
                        if vlen != 4 {
                            return Err(StunError::BadAttribute);
                        }
                        msg.fingerprint = Some(at);
                        msg.attrs_end = msg.attrs_end.min(at);
                    }
                    _ => {}
                }
            }
            at = next;
        }
        Ok(msg)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The method (12 bits).
    pub fn method(&self) -> u16 {
        method_of(self.typ)
    }

    /// The class.
    pub fn class(&self) -> Class {
        Class::from_type(self.typ)
    }

    /// The 96-bit transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.buf[8..20]);
        t
    }

    /// The usable attributes in order (those before any integrity or fingerprint attribute).
    pub fn attrs(&self) -> AttrIter<'a> {
        AttrIter {
            buf: &self.buf[..self.attrs_end],
            at: HEADER_LEN,
        }
    }

    /// The value of the first usable attribute of type `t`.
    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        self.attrs().find(|(ty, _)| *ty == t).map(|(_, v)| v)
    }

    /// The first comprehension-required attribute (type < 0x8000) that `known` does not accept.
    pub fn unknown_required(&self, known: impl Fn(u16) -> bool) -> Option<u16> {
        self.attrs()
            .map(|(t, _)| t)
            .find(|&t| t < 0x8000 && !known(t))
    }

    /// A XOR-encoded address attribute.
    pub fn xor_addr(&self, t: u16) -> Option<std::net::SocketAddr> {
        attr::decode_xor_addr(self.get(t)?, &self.transaction_id())
    }

    /// Whether MESSAGE-INTEGRITY is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is present.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether FINGERPRINT is present.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// The header with its length field set as if the message ended at `end`.
    fn header_ending_at(&self, end: usize) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[..HEADER_LEN]);
        // `end` never exceeds the 16-bit length checked in parse.
        let len = u16::try_from(end - HEADER_LEN).unwrap_or(u16::MAX);
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity else {
            return false;
        };
        let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
            return false;
        };
        mac.update(&self.header_ending_at(at + 24));
        mac.update(&self.buf[HEADER_LEN..at]);
        mac.verify_slice(&self.buf[at + 4..at + 24]).is_ok()
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (possibly truncated) with `key`, in constant time.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_sha256 else {
            return false;
        };
        let vlen = usize::from(be16(self.buf, at + 2));
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
            return false;
        };
        mac.update(&self.header_ending_at(at + 4 + vlen));
        mac.update(&self.buf[HEADER_LEN..at]);
        mac.verify_truncated_left(&self.buf[at + 4..at + 4 + vlen])
            .is_ok()
    }

    /// Checks FINGERPRINT. `false` if absent.
    pub fn verify_fingerprint(&self) -> bool {
        let Some(at) = self.fingerprint else {
            return false;
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&self.header_ending_at(at + 8));
        h.update(&self.buf[HEADER_LEN..at]);
        let want = u32::from_be_bytes([
            self.buf[at + 4],
            self.buf[at + 5],
            self.buf[at + 6],
            self.buf[at + 7],
        ]);
        h.finalize() ^ FINGERPRINT_XOR == want
    }
}

/// Iterator over `(type, value)` attribute pairs.
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.at + 4 > self.buf.len() {
            return None;
        }
        let t = be16(self.buf, self.at);
        let vlen = usize::from(be16(self.buf, self.at + 2));
        let start = self.at + 4;
        let end = start + vlen;
        if end > self.buf.len() {
            return None;
        }
        self.at = start + vlen.div_ceil(4) * 4;
        Some((t, &self.buf[start..end]))
    }
}

/// Appends one STUN message to a caller-owned buffer.
///
/// Attribute values longer than 65 535 bytes are truncated; callers never write such values.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    tid: [u8; 12],
}

impl<'b> MessageWriter<'b> {
    /// Starts a message at the end of `buf`.
    pub fn new(buf: &'b mut Vec<u8>, method: u16, class: Class, tid: &[u8; 12]) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(tid);
        Self {
            buf,
            start,
            tid: *tid,
        }
    }

    fn set_len(&mut self, extra: usize) {
        let len = self.buf.len() - self.start - HEADER_LEN + extra;
        let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        self.buf[self.start + 2] = len[0];
        self.buf[self.start + 3] = len[1];
    }

    /// Appends an attribute with padding.
    pub fn attr(&mut self, t: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(0xffff)];
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf
            .extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = value.len().div_ceil(4) * 4 - value.len();
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self
    }

    /// Appends a 32-bit attribute.
    pub fn attr_u32(&mut self, t: u16, v: u32) -> &mut Self {
        self.attr(t, &v.to_be_bytes())
    }

    /// Appends a XOR-encoded address attribute.
    pub fn xor_addr(&mut self, t: u16, addr: std::net::SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        let n = attr::encode_xor_addr(addr, &self.tid, &mut v);
        self.attr(t, &v[..n])
    }

    /// Appends ERROR-CODE with the standard reason phrase.
    pub fn error_code(&mut self, code: u16) -> &mut Self {
        let reason = attr::reason_phrase(code).as_bytes();
        let mut v = [0u8; 4 + 64];
        v[2] = u8::try_from(code / 100).unwrap_or(5);
        v[3] = u8::try_from(code % 100).unwrap_or(0);
        let n = reason.len().min(64);
        v[4..4 + n].copy_from_slice(&reason[..n]);
        self.attr(attr::ERROR_CODE, &v[..4 + n])
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        self.set_len(24);
        let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
            return self;
        };
        mac.update(&self.buf[self.start..]);
        let out = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &out)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        self.set_len(36);
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
            return self;
        };
        mac.update(&self.buf[self.start..]);
        let out = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY_SHA256, &out)
    }

    /// Appends FINGERPRINT. Must be the last attribute.
    pub fn fingerprint(&mut self) -> &mut Self {
        self.set_len(8);
        let crc = crc32fast::hash(&self.buf[self.start..]) ^ FINGERPRINT_XOR;
        self.attr_u32(attr::FINGERPRINT, crc)
    }

    /// Fixes the header length and returns the message's total size.
    pub fn finish(mut self) -> usize {
        self.set_len(0);
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_round_trip() {
        for m in [0x001, 0x003, 0x00a, 0x00c, 0xfff] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = message_type(m, c);
                assert_eq!(method_of(t), m);
                assert_eq!(Class::from_type(t), c);
            }
        }
        assert_eq!(message_type(0x001, Class::Success), 0x0101);
        assert_eq!(message_type(0x003, Class::Error), 0x0113);
        assert_eq!(message_type(0x006, Class::Indication), 0x0016);
    }

    #[test]
    fn writer_output_parses_and_verifies() {
        let mut buf = vec![0xee; 3];
        let tid = [7u8; 12];
        let mut w = MessageWriter::new(&mut buf, 0x003, Class::Error, &tid);
        w.error_code(401)
            .attr(attr::REALM, b"ring")
            .attr(attr::NONCE, b"abcde");
        w.integrity(b"key").integrity_sha256(b"key").fingerprint();
        let n = w.finish();
        let m = Message::parse(&buf[3..]).unwrap();
        assert_eq!(n, buf.len() - 3);
        assert_eq!(m.class(), Class::Error);
        assert_eq!(m.get(attr::REALM), Some(&b"ring"[..]));
        assert_eq!(
            attr::decode_error_code(m.get(attr::ERROR_CODE).unwrap()),
            Some(401)
        );
        assert!(m.verify_integrity(b"key"));
        assert!(!m.verify_integrity(b"other"));
        assert!(m.verify_integrity_sha256(b"key"));
        assert!(m.verify_fingerprint());
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, 0x001, Class::Request, &[1; 12]);
        w.integrity(b"k").attr(attr::USERNAME, b"late");
        w.finish();
        let m = Message::parse(&buf).unwrap();
        assert_eq!(m.get(attr::USERNAME), None);
    }

    #[test]
    fn frames() {
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(
            frame_len(&[0x00, 0x01, 0x00, 0x07]),
            Err(StunError::BadLength)
        );
        assert_eq!(
            frame_len(&[0x80, 0x01, 0x00, 0x08]),
            Err(StunError::BadFrame)
        );
        assert_eq!(frame_len(&[0x00]), Ok(None));
    }
}
