//! RFC 5769 and RFC 8489 Appendix B.1 (Errata 6268) test vectors, and codec properties.

use std::net::SocketAddr;

use proptest::prelude::*;
use waypost_protocol::stun::{
    Class, Message, MessageWriter, attr, auth, channel, frame_len, method,
};

const SHORT_TERM: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

// RFC 5769 §2.1
const REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";
// RFC 5769 §2.2
const RESPONSE_V4: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96";
// RFC 5769 §2.3
const RESPONSE_V6: &str = "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c";
// RFC 5769 §2.4
const LONG_TERM: &str = "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b900000015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f72670000080014f67024656dd64a3e02b8e0712e85c9a28ca89666";
// RFC 8489 B.1 as corrected by Errata 6268
const B1: &str = "000100902112a44278ad3433c6ad72c029da412e001e00204a3cf38fef6992bda952c6780417da0f248194155 69e60b205c46e41407f17040015002 96f624d61744a6f7332414141436 62f2f3439396b393534643 64f4c33346f4c3946535476793 6347341000000001400 0b6578616d706c652e6f7267000 01d0004000200000 01c0020b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65";

fn b1() -> Vec<u8> {
    h(&B1.replace(' ', ""))
}

#[test]
fn rfc5769_request() {
    let b = h(REQUEST);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), method::BINDING);
    assert_eq!(m.get(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert_eq!(m.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(m.get(attr::PRIORITY), Some(&[0x6e, 0x00, 0x01, 0xff][..]));
    assert!(m.verify_integrity(SHORT_TERM));
    assert!(!m.verify_integrity(b"wrong"));
    assert!(m.verify_fingerprint());
    // Re-encode from the decoded attributes: byte-identical except the USERNAME padding, which the
    // RFC fills with spaces and we fill with zeros. Integrity and fingerprint are recomputed.
    let mut out = Vec::new();
    let mut w = MessageWriter::new(
        &mut out,
        method::BINDING,
        Class::Request,
        &m.transaction_id(),
    );
    for (t, v) in m.attrs() {
        w.attr(t, v);
    }
    w.integrity(SHORT_TERM).fingerprint();
    w.finish();
    assert_eq!(out.len(), b.len());
    let mut expect = b.clone();
    expect[73..76].copy_from_slice(&[0, 0, 0]);
    let m2 = Message::parse(&out).unwrap();
    assert!(m2.verify_integrity(SHORT_TERM) && m2.verify_fingerprint());
    assert_eq!(out[..76], expect[..76]);
}

fn check_response(hex: &str, addr: &str) {
    let b = h(hex);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.get(attr::SOFTWARE), Some(&b"test vector"[..]));
    let want: SocketAddr = addr.parse().unwrap();
    assert_eq!(m.xor_addr(attr::XOR_MAPPED_ADDRESS), Some(want));
    assert!(m.verify_integrity(SHORT_TERM));
    assert!(m.verify_fingerprint());
    // Re-encoding: identical up to MESSAGE-INTEGRITY except the SOFTWARE padding byte (the RFC
    // pads with a space, we pad with zero); integrity and fingerprint are recomputed and verified.
    let mut out = Vec::new();
    let mut w = MessageWriter::new(
        &mut out,
        method::BINDING,
        Class::Success,
        &m.transaction_id(),
    );
    w.attr(attr::SOFTWARE, b"test vector")
        .xor_addr(attr::XOR_MAPPED_ADDRESS, want);
    w.integrity(SHORT_TERM).fingerprint();
    w.finish();
    assert_eq!(out.len(), b.len());
    let mut expect = b.clone();
    expect[35] = 0;
    let mi = out.len() - 32;
    assert_eq!(out[..mi], expect[..mi]);
    let m2 = Message::parse(&out).unwrap();
    assert!(m2.verify_integrity(SHORT_TERM) && m2.verify_fingerprint());
}

#[test]
fn rfc5769_responses() {
    check_response(RESPONSE_V4, "192.0.2.1:32853");
    check_response(RESPONSE_V6, "[2001:db8:1234:5678:11:2233:4455:6677]:32853");
}

#[test]
fn rfc5769_long_term() {
    let b = h(LONG_TERM);
    let m = Message::parse(&b).unwrap();
    let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    assert_eq!(m.get(attr::USERNAME), Some(user.as_bytes()));
    assert_eq!(
        m.get(attr::NONCE),
        Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..])
    );
    assert_eq!(m.get(attr::REALM), Some(&b"example.org"[..]));
    let key = auth::long_term_key(user.as_bytes(), b"example.org", b"TheMatrIX");
    assert!(m.verify_integrity(&key));
    assert!(!m.has_fingerprint());
    let mut out = Vec::new();
    let mut w = MessageWriter::new(
        &mut out,
        method::BINDING,
        Class::Request,
        &m.transaction_id(),
    );
    for (t, v) in m.attrs() {
        w.attr(t, v);
    }
    w.integrity(&key);
    w.finish();
    assert_eq!(out, b);
}

#[test]
fn rfc8489_b1_corrected() {
    let b = b1();
    let m = Message::parse(&b).unwrap();
    let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}".as_bytes();
    assert_eq!(
        m.get(attr::USERHASH),
        Some(&auth::userhash(user, b"example.org")[..])
    );
    assert_eq!(m.get(attr::PASSWORD_ALGORITHM), Some(&[0, 2, 0, 0][..]));
    let key = auth::long_term_key_sha256(user, b"example.org", b"TheMatrIX");
    assert!(m.verify_integrity_sha256(&key));
    assert!(!m.verify_integrity_sha256(&[0u8; 32]));
    let mut out = Vec::new();
    let mut w = MessageWriter::new(
        &mut out,
        method::BINDING,
        Class::Request,
        &m.transaction_id(),
    );
    for (t, v) in m.attrs() {
        w.attr(t, v);
    }
    w.integrity_sha256(&key);
    w.finish();
    assert_eq!(out, b);
}

#[test]
fn corrupted_vectors_fail_checks() {
    let mut b = h(REQUEST);
    b[30] ^= 1;
    let m = Message::parse(&b).unwrap();
    assert!(!m.verify_integrity(SHORT_TERM));
    assert!(!m.verify_fingerprint());
    let b = h(REQUEST);
    assert!(Message::parse(&b[..b.len() - 4]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = Message::parse(&bytes) {
            let _ = m.attrs().count();
            let _ = m.verify_integrity(b"k");
            let _ = m.verify_integrity_sha256(b"k");
            let _ = m.verify_fingerprint();
            let _ = m.xor_addr(attr::XOR_PEER_ADDRESS);
            let _ = m.get(attr::ERROR_CODE).map(attr::decode_error_code);
        }
        let _ = channel::parse(&bytes);
        let _ = frame_len(&bytes);
        let _ = attr::decode_addr(&bytes);
        let _ = auth::rest_expiry(&bytes);
    }

    #[test]
    fn stun_shaped_input_never_panics(
        attrs in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        lie in any::<u16>(),
    ) {
        // A valid header followed by arbitrary attribute headers whose lengths may lie.
        let mut b = h("000100002112a442000000000000000000000000");
        for (t, v) in &attrs {
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&(v.len() as u16 ^ (lie & 7)).to_be_bytes());
            b.extend_from_slice(v);
        }
        while !b.len().is_multiple_of(4) { b.push(0); }
        let len = (b.len() - 20) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        if let Ok(m) = Message::parse(&b) {
            for (_, v) in m.attrs() {
                let _ = attr::decode_xor_addr(v, &m.transaction_id());
            }
            let _ = m.verify_integrity(b"k");
            let _ = m.verify_fingerprint();
        }
    }

    #[test]
    fn writer_round_trip(
        attrs in proptest::collection::vec((0x8030u16..0x8040, proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
        tid in any::<[u8; 12]>(),
        key in proptest::collection::vec(any::<u8>(), 1..40),
        port in any::<u16>(),
        ip in any::<[u8; 16]>(),
    ) {
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, method::ALLOCATE, Class::Success, &tid);
        for (t, v) in &attrs { w.attr(*t, v); }
        let peer = SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), port);
        w.xor_addr(attr::XOR_RELAYED_ADDRESS, peer);
        w.integrity(&key).fingerprint();
        w.finish();
        let m = Message::parse(&out).unwrap();
        prop_assert_eq!(m.transaction_id(), tid);
        prop_assert_eq!(m.method(), method::ALLOCATE);
        let got: Vec<_> = m.attrs().take(attrs.len()).map(|(t, v)| (t, v.to_vec())).collect();
        prop_assert_eq!(got, attrs);
        prop_assert_eq!(m.xor_addr(attr::XOR_RELAYED_ADDRESS), Some(peer));
        prop_assert!(m.verify_integrity(&key));
        prop_assert!(m.verify_fingerprint());
    }
}
