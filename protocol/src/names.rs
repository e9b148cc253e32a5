//! Jami name rules: the syntax of registered names and of Jami IDs as the name server sees them.
//!
//! Sans-IO and allocation-light. The rules follow the name server reference (spec nameserver.md
//! §2.1, §2.2, §1.4):
//! - a name is `^[a-z0-9_-]{3,32}$`, checked on the percent-decoded path segment;
//! - registrations are checked as received (no case folding: `Alice` is invalid);
//! - lookups are ASCII-lowercased first, then checked, so `GET /name/Alice` finds `alice`;
//! - an address is 40 hex digits with an optional `0x`, `ring:` or `jami:` prefix, and not zero.
//!
//! Error types carry no input: their `Display` never shows the rejected name or address.

use crate::identity::JamiId;

/// Shortest valid name, in bytes.
pub const MIN_NAME_LEN: usize = 3;
/// Longest valid name, in bytes (the on-chain `bytes32` limit).
pub const MAX_NAME_LEN: usize = 32;

/// A name that does not follow the syntax. Deliberately carries no copy of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid name")]
pub struct InvalidName;

/// An address that is not a non-zero 40-hex-digit Jami ID. Carries no copy of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid address")]
pub struct InvalidAddress;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// Whether `name` is a valid registered name exactly as given (`^[a-z0-9_-]{3,32}$`).
pub fn is_valid_name(name: &str) -> bool {
    (MIN_NAME_LEN..=MAX_NAME_LEN).contains(&name.len()) && name.bytes().all(is_name_byte)
}

/// Checks a name for registration: exactly as received, no case folding.
pub fn check_registration_name(name: &str) -> Result<&str, InvalidName> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(InvalidName)
    }
}

/// Normalises a name for lookup: ASCII-lowercases it, then checks the syntax.
pub fn normalize_lookup_name(name: &str) -> Result<String, InvalidName> {
    // Reject over-long input before allocating a lowercase copy.
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName);
    }
    let lower = name.to_ascii_lowercase();
    if is_valid_name(&lower) {
        Ok(lower)
    } else {
        Err(InvalidName)
    }
}

/// Parses a Jami ID as clients send it: 40 hex digits of any case, with an optional `0x`,
/// `ring:` or `jami:` prefix. The all-zero ID is rejected.
pub fn parse_address(s: &str) -> Result<JamiId, InvalidAddress> {
    let hex_part = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .or_else(|| s.strip_prefix("ring:"))
        .or_else(|| s.strip_prefix("jami:"))
        .unwrap_or(s);
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidAddress);
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| InvalidAddress)?;
    if out == [0u8; 20] {
        return Err(InvalidAddress);
    }
    Ok(JamiId::new(out))
}

/// Formats a Jami ID as the name server returns it: `0x` followed by 40 lowercase hex digits.
pub fn format_address(id: &JamiId) -> String {
    format!("0x{}", id.to_hex())
}

/// Decodes `%XX` escapes (either hex case). Returns `None` on a malformed escape. `+` is kept
/// as is (paths, not forms).
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes a name the way jami-daemon does: RFC 3986 unreserved bytes pass through,
/// every other byte becomes `%XX` with upper-case hex.
pub fn percent_encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn name_syntax() {
        for ok in ["abc", "alice", "a-b_c", "0123456789", &"a".repeat(32)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "al",
            "Alice",
            "al ice",
            "é",
            "a.b",
            "==",
            &"a".repeat(33),
            "ali%63",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn registration_does_not_fold_case_but_lookup_does() {
        assert_eq!(check_registration_name("Alice"), Err(InvalidName));
        assert_eq!(check_registration_name("alice"), Ok("alice"));
        assert_eq!(normalize_lookup_name("AlIcE").as_deref(), Ok("alice"));
        assert_eq!(normalize_lookup_name(&"A".repeat(33)), Err(InvalidName));
        assert_eq!(normalize_lookup_name("=="), Err(InvalidName));
    }

    #[test]
    fn address_syntax() {
        let id = "0123456789abcdef0123456789ABCDEF01234567";
        let want = parse_address(id).unwrap();
        for prefixed in [
            format!("0x{id}"),
            format!("ring:{id}"),
            format!("jami:{id}"),
        ] {
            assert_eq!(parse_address(&prefixed).unwrap(), want);
        }
        assert_eq!(
            format_address(&want),
            "0x0123456789abcdef0123456789abcdef01234567"
        );
        for bad in [
            "zz",
            "0x0",
            "",
            &"0".repeat(40),
            &"a".repeat(39),
            &"a".repeat(41),
            "0x",
        ] {
            assert_eq!(parse_address(bad), Err(InvalidAddress), "{bad}");
        }
        assert!(parse_address(&format!("0x{}", "g".repeat(40))).is_err());
    }

    #[test]
    fn errors_do_not_echo_input() {
        assert_eq!(InvalidName.to_string(), "invalid name");
        assert_eq!(InvalidAddress.to_string(), "invalid address");
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("%C3%a9t%C3%A9").unwrap(), "été".as_bytes());
        assert_eq!(percent_decode("%3D%3D").unwrap(), b"==");
        assert_eq!(percent_decode("%3"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_encode_name("été"), "%C3%A9t%C3%A9");
        assert_eq!(percent_encode_name("a-b_c.~"), "a-b_c.~");
    }

    proptest! {
        #[test]
        fn percent_round_trip(s in ".{0,40}") {
            prop_assert_eq!(percent_decode(&percent_encode_name(&s)).unwrap(), s.as_bytes());
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}") {
            let _ = parse_address(&s);
            let _ = normalize_lookup_name(&s);
            let _ = percent_decode(&s);
        }

        #[test]
        fn valid_names_are_lookup_fixed_points(s in "[a-z0-9_-]{3,32}") {
            prop_assert_eq!(normalize_lookup_name(&s).unwrap(), s.as_str());
            prop_assert!(check_registration_name(&s).is_ok());
        }
    }
}
