//! RFC 8291 Web Push message encryption (`aes128gcm`, RFC 8188 single record), used for
//! UnifiedPush subscribers whose topic is `<p256dh>|<auth>` (OpenDHT 4.1+ behaviour).

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{ECDH_P256, PrivateKey, UnparsedPublicKey, agree};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// A subscriber's Web Push keys.
pub struct UaKeys {
    /// Uncompressed P-256 public key (65 bytes).
    pub p256dh: Vec<u8>,
    /// Authentication secret (16 bytes).
    pub auth: Vec<u8>,
}

fn b64_any(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    [&STANDARD, &URL_SAFE]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .or_else(|| {
            [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD]
                .iter()
                .find_map(|e| e.decode(s.trim_end_matches('=')).ok())
        })
}

impl UaKeys {
    /// Parses a `p256dh|auth` topic (standard or URL-safe base64). `None` if it is not one.
    pub fn from_topic(topic: &str) -> Option<Self> {
        let (p, a) = topic.split_once('|')?;
        let p256dh = b64_any(p)?;
        let auth = b64_any(a)?;
        (p256dh.len() == 65 && p256dh[0] == 4 && auth.len() == 16).then_some(Self { p256dh, auth })
    }
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], len: usize) -> Option<Vec<u8>> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    let mut out = vec![0u8; len];
    prk.expand(info, Len(len)).ok()?.fill(&mut out).ok()?;
    Some(out)
}

/// Encrypts `plaintext` for `ua` with a fresh sender key and salt.
pub fn encrypt(ua: &UaKeys, plaintext: &[u8]) -> Option<Vec<u8>> {
    let sender = PrivateKey::generate(&ECDH_P256).ok()?;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).ok()?;
    encrypt_with(ua, plaintext, &sender, &salt)
}

/// Encrypts with a given sender key and salt (deterministic, for tests).
pub fn encrypt_with(
    ua: &UaKeys,
    plaintext: &[u8],
    sender: &PrivateKey,
    salt: &[u8; 16],
) -> Option<Vec<u8>> {
    let as_public = sender.compute_public_key().ok()?.as_ref().to_vec();
    let ecdh = agree(
        sender,
        UnparsedPublicKey::new(&ECDH_P256, &ua.p256dh),
        (),
        |s| Ok(s.to_vec()),
    )
    .ok()?;
    let ikm = hkdf(
        &ua.auth,
        &ecdh,
        &[b"WebPush: info\0", &ua.p256dh, &as_public],
        32,
    )?;
    let cek = hkdf(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], 16)?;
    let nonce = hkdf(salt, &ikm, &[b"Content-Encoding: nonce\0"], 12)?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).ok()?);
    let mut record = plaintext.to_vec();
    record.push(0x02); // last-record padding delimiter
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(&nonce).ok()?,
        Aad::empty(),
        &mut record,
    )
    .ok()?;
    let rs = u32::try_from(record.len().max(4096)).ok()?;
    let mut out = Vec::with_capacity(16 + 4 + 1 + 65 + record.len());
    out.extend_from_slice(salt);
    out.extend_from_slice(&rs.to_be_bytes());
    out.push(u8::try_from(as_public.len()).ok()?);
    out.extend_from_slice(&as_public);
    out.extend_from_slice(&record);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user agent's side, written from RFC 8291 §3.4 and RFC 8188 §2.
    fn decrypt(ua_priv: &PrivateKey, auth: &[u8], body: &[u8]) -> Vec<u8> {
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
        let idlen = body[20] as usize;
        let as_public = &body[21..21 + idlen];
        let ct = &body[21 + idlen..];
        assert!(rs as usize >= ct.len());
        let ua_public = ua_priv.compute_public_key().unwrap().as_ref().to_vec();
        let ecdh = agree(
            ua_priv,
            UnparsedPublicKey::new(&ECDH_P256, as_public),
            (),
            |s| Ok(s.to_vec()),
        )
        .unwrap();
        let ikm = hkdf(
            auth,
            &ecdh,
            &[b"WebPush: info\0", &ua_public, as_public],
            32,
        )
        .unwrap();
        let cek = hkdf(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], 16).unwrap();
        let nonce = hkdf(salt, &ikm, &[b"Content-Encoding: nonce\0"], 12).unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).unwrap());
        let mut buf = ct.to_vec();
        let pt = key
            .open_in_place(
                Nonce::try_assume_unique_for_key(&nonce).unwrap(),
                Aad::empty(),
                &mut buf,
            )
            .unwrap()
            .to_vec();
        assert_eq!(pt.last(), Some(&2), "last-record delimiter");
        pt[..pt.len() - 1].to_vec()
    }

    #[test]
    fn round_trip_through_the_user_agent_side() {
        let ua = PrivateKey::generate(&ECDH_P256).unwrap();
        let p256dh = ua.compute_public_key().unwrap().as_ref().to_vec();
        let auth = [7u8; 16];
        let topic = format!(
            "{}|{}",
            URL_SAFE_NO_PAD.encode(&p256dh),
            STANDARD.encode(auth)
        );
        let keys = UaKeys::from_topic(&topic).expect("topic parses");
        let msg = br#"{"key":"e22a","to":"c"}"#;
        let body = encrypt(&keys, msg).unwrap();
        assert_eq!(body.len(), 16 + 4 + 1 + 65 + msg.len() + 1 + 16);
        assert_eq!(decrypt(&ua, &auth, &body), msg);
        assert!(UaKeys::from_topic("com.example.app").is_none());
        assert!(UaKeys::from_topic("abc|def").is_none());
    }
}
