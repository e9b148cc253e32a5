//! ChannelData framing (RFC 8656 §12.4).

/// Whether `n` is a channel number we accept. RFC 8656 narrows the range to 0x4000–0x4FFF, but
/// RFC 5766 clients (coturn's uclient 4.6) pick from 0x4000–0x7FFF, so both are accepted.
pub fn is_channel_number(n: u16) -> bool {
    (0x4000..=0x7fff).contains(&n)
}

/// Parses a ChannelData message: `(channel, payload)`. Trailing padding is allowed (pjnath pads
/// over UDP too).
pub fn parse(buf: &[u8]) -> Option<(u16, &[u8])> {
    if buf.len() < 4 {
        return None;
    }
    let ch = u16::from_be_bytes([buf[0], buf[1]]);
    if !is_channel_number(ch) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    buf.get(4..4 + len).map(|p| (ch, p))
}

/// Writes the 4-byte ChannelData header for a payload of `len` bytes (at most 65 535).
pub fn header(ch: u16, len: usize) -> [u8; 4] {
    let l = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    let c = ch.to_be_bytes();
    [c[0], c[1], l[0], l[1]]
}

/// Bytes of padding that follow a payload of `len` bytes on a stream transport.
pub fn stream_padding(len: usize) -> usize {
    len.div_ceil(4) * 4 - len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_padding() {
        let mut b = header(0x4001, 3).to_vec();
        b.extend_from_slice(b"abc\0");
        assert_eq!(parse(&b), Some((0x4001, &b"abc"[..])));
        assert_eq!(parse(&b[..6]), None);
        assert_eq!(parse(&[0x3f, 0xff, 0, 0]), None);
        assert_eq!(parse(&[0x80, 0x00, 0, 0]), None);
        assert_eq!(stream_padding(3), 1);
        assert_eq!(stream_padding(4), 0);
    }
}
