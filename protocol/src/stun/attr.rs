//! Attribute types and value encodings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::MAGIC_COOKIE;

/// MAPPED-ADDRESS.
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME.
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY.
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE.
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000a;
/// CHANNEL-NUMBER.
pub const CHANNEL_NUMBER: u16 = 0x000c;
/// LIFETIME.
pub const LIFETIME: u16 = 0x000d;
/// XOR-PEER-ADDRESS.
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA.
pub const DATA: u16 = 0x0013;
/// REALM.
pub const REALM: u16 = 0x0014;
/// NONCE.
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS.
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (RFC 6156).
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT.
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT.
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT.
pub const DONT_FRAGMENT: u16 = 0x001a;
/// MESSAGE-INTEGRITY-SHA256.
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001c;
/// PASSWORD-ALGORITHM.
pub const PASSWORD_ALGORITHM: u16 = 0x001d;
/// USERHASH.
pub const USERHASH: u16 = 0x001e;
/// XOR-MAPPED-ADDRESS.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN.
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PRIORITY (ICE).
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE (ICE).
pub const USE_CANDIDATE: u16 = 0x0025;
/// CONNECTION-ID (RFC 6062).
pub const CONNECTION_ID: u16 = 0x002a;
/// PASSWORD-ALGORITHMS.
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// SOFTWARE.
pub const SOFTWARE: u16 = 0x8022;
/// FINGERPRINT.
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED.
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING.
pub const ICE_CONTROLLING: u16 = 0x802a;

/// REQUESTED-TRANSPORT value for UDP.
pub const TRANSPORT_UDP: u8 = 17;
/// REQUESTED-TRANSPORT value for TCP (RFC 6062).
pub const TRANSPORT_TCP: u8 = 6;

/// Address family codes in address attributes.
pub const FAMILY_V4: u8 = 0x01;
/// IPv6.
pub const FAMILY_V6: u8 = 0x02;

/// Decodes MAPPED-ADDRESS style values.
pub fn decode_addr(v: &[u8]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match (v[1], v.len()) {
        (FAMILY_V4, 8) => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(v[4], v[5], v[6], v[7])),
            port,
        )),
        (FAMILY_V6, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Decodes an XOR-*-ADDRESS value.
pub fn decode_xor_addr(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let a = decode_addr(v)?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match a.ip() {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) ^ MAGIC_COOKIE)),
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            for (i, b) in o.iter_mut().enumerate() {
                *b ^= if i < 4 { cookie[i] } else { tid[i - 4] };
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    Some(SocketAddr::new(ip, port))
}

/// Encodes an XOR-*-ADDRESS value into `out`, returning its length (8 or 20).
pub fn encode_xor_addr(addr: SocketAddr, tid: &[u8; 12], out: &mut [u8; 20]) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    out[0] = 0;
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_V4;
            out[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            8
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_V6;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ if i < 4 { cookie[i] } else { tid[i - 4] };
            }
            20
        }
    }
}

/// Decodes ERROR-CODE into the numeric code.
pub fn decode_error_code(v: &[u8]) -> Option<u16> {
    if v.len() < 4 || v[3] > 99 {
        return None;
    }
    Some(u16::from(v[2] & 0x07) * 100 + u16::from(v[3]))
}

/// Decodes a 32-bit attribute.
pub fn decode_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// The reason phrase we send with an error code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_round_trip() {
        let tid = [9u8; 12];
        for a in ["192.0.2.1:32853", "[2001:db8::1]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut v = [0u8; 20];
            let n = encode_xor_addr(a, &tid, &mut v);
            assert_eq!(decode_xor_addr(&v[..n], &tid), Some(a));
        }
        assert_eq!(decode_xor_addr(&[0, 1, 0], &tid), None);
        assert_eq!(decode_xor_addr(&[0, 3, 0, 0, 0, 0, 0, 0], &tid), None);
    }
}
