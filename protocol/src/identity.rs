//! Jami identities: RSA keys and Jami IDs.
//!
//! Facts (spec nameserver.md §2.2, §2.4):
//! - A Jami ID is the SHA-1 of the DER `SubjectPublicKeyInfo` of the account's RSA public key,
//!   written as 40 lowercase hex digits.
//! - The name server's `publickey` field is base64 (standard alphabet, padded) of the PEM text
//!   `-----BEGIN PUBLIC KEY-----` with 64-column lines. Clients before OpenDHT `74a1918` append a
//!   NUL byte after the PEM; [`PublicKey::from_base64_field`] accepts that, plain PEM or DER.
//! - Signatures are RSASSA-PKCS1-v1_5 with SHA-512 over the exact message bytes (for names: the
//!   UTF-8 bytes of the lowercased name). PSS is not used.
//!
//! Crypto is aws-lc-rs. Key generation draws from aws-lc's own system RNG (aws-lc-rs offers no
//! way to inject one for RSA); everything else is deterministic.
//!
//! No type here prints key material or IDs in `Debug`.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicEncryptingKey};
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Smallest RSA modulus accepted for identities, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The size Jami uses for account keys.
pub const JAMI_RSA_BITS: usize = 4096;

const PEM_PUBLIC: &str = "PUBLIC KEY";
const PEM_PRIVATE: &str = "PRIVATE KEY";
const PEM_RSA_PRIVATE: &str = "RSA PRIVATE KEY";

/// What went wrong with a key, a signature or an encoding. Carries no key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The text is not valid base64.
    #[error("invalid base64")]
    Base64,
    /// The PEM armour is malformed or has an unexpected label.
    #[error("invalid PEM")]
    Pem,
    /// The bytes are not an RSA key aws-lc accepts (or the size is outside 2048..=8192 bits).
    #[error("not an acceptable RSA key")]
    Key,
    /// The key is smaller than the required minimum.
    #[error("RSA key too small")]
    KeyTooSmall,
    /// The signature does not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// Key generation or signing failed inside aws-lc.
    #[error("crypto failure")]
    Crypto,
}

/// RSA key sizes offered for generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyBits {
    /// 2048 bits (tests and benchmarks only; Jami uses 4096).
    Rsa2048,
    /// 3072 bits.
    Rsa3072,
    /// 4096 bits, the size of Jami account keys.
    Rsa4096,
}

impl KeyBits {
    fn size(self) -> KeySize {
        match self {
            Self::Rsa2048 => KeySize::Rsa2048,
            Self::Rsa3072 => KeySize::Rsa3072,
            Self::Rsa4096 => KeySize::Rsa4096,
        }
    }
}

/// A Jami ID (20 bytes). `Debug` does not show the value; use [`Self::to_hex`] deliberately.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JamiId([u8; 20]);

impl JamiId {
    /// Wraps raw bytes.
    pub const fn new(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// 40 lowercase hex digits, no prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The ID of a DER `SubjectPublicKeyInfo`: its SHA-1.
    pub fn of_spki_der(der: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let mut out = [0u8; 20];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

impl fmt::Debug for JamiId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted jami id>")
    }
}

/// Encodes DER as PEM with 64-column lines and a trailing newline.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Decodes the first PEM block in `text`. Tolerates leading/trailing whitespace, CRLF line ends
/// and trailing NUL bytes. Returns the label and the DER bytes.
pub fn pem_decode(text: &[u8]) -> Result<(String, Vec<u8>), IdentityError> {
    let end = text
        .iter()
        .rposition(|b| *b != 0 && !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&text[..end])
        .map_err(|_| IdentityError::Pem)?
        .trim_start();
    let rest = text.strip_prefix("-----BEGIN ").ok_or(IdentityError::Pem)?;
    let (label, rest) = rest.split_once("-----").ok_or(IdentityError::Pem)?;
    let end_marker = format!("-----END {label}-----");
    let (body, _) = rest.split_once(&end_marker).ok_or(IdentityError::Pem)?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| IdentityError::Pem)?;
    Ok((label.to_owned(), der))
}

/// An RSA public key, held as its canonical DER `SubjectPublicKeyInfo`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki: Vec<u8>,
    bits: usize,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Imports a DER `SubjectPublicKeyInfo` (or PKCS#1 `RSAPublicKey`) RSA key of at least
    /// [`MIN_RSA_BITS`]. The stored form is the canonical SPKI re-encoding.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let key = match PublicEncryptingKey::from_der(der) {
            Ok(k) => k,
            Err(_) => {
                // PKCS#1 RSAPublicKey: go through the signature-side parser, then re-encode.
                let k = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| IdentityError::Key)?;
                let spki = k.as_der().map_err(|_| IdentityError::Key)?;
                PublicEncryptingKey::from_der(spki.as_ref()).map_err(|_| IdentityError::Key)?
            }
        };
        let bits = key.key_size_bits();
        if bits < MIN_RSA_BITS {
            return Err(IdentityError::KeyTooSmall);
        }
        let spki = key
            .as_der()
            .map_err(|_| IdentityError::Key)?
            .as_ref()
            .to_vec();
        Ok(Self { spki, bits })
    }

    /// Imports a PEM `PUBLIC KEY` block; trailing NUL bytes and whitespace are tolerated.
    pub fn from_pem(text: &[u8]) -> Result<Self, IdentityError> {
        let (label, der) = pem_decode(text)?;
        if label != PEM_PUBLIC && label != "RSA PUBLIC KEY" {
            return Err(IdentityError::Pem);
        }
        Self::from_der(&der)
    }

    /// Imports the name server's `publickey` field: base64 of PEM (optionally NUL-terminated)
    /// or base64 of DER.
    pub fn from_base64_field(field: &str) -> Result<Self, IdentityError> {
        let cleaned: String = field.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let raw = STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|_| IdentityError::Base64)?;
        // PEM armour starts with dashes (after optional white space); DER SPKI is a SEQUENCE
        // (0x30). Random DER bytes may contain '-', so the armour is matched, not a byte.
        let text_start = raw
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(raw.len());
        if raw[text_start..].starts_with(b"-----BEGIN") {
            Self::from_pem(&raw)
        } else if raw.first() == Some(&0x30) {
            Self::from_der(&raw)
        } else {
            Self::from_pem(&raw).or_else(|_| Self::from_der(&raw))
        }
    }

    /// The canonical DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The Jami ID: SHA-1 of the DER SPKI.
    pub fn id(&self) -> JamiId {
        JamiId::of_spki_der(&self.spki)
    }

    /// PEM text (`-----BEGIN PUBLIC KEY-----`, 64-column lines, trailing newline).
    pub fn to_pem(&self) -> String {
        pem_encode(PEM_PUBLIC, &self.spki)
    }

    /// The name server's `publickey` field: base64 of the PEM text, followed by a NUL byte if
    /// `with_nul` (what clients before 2026-08 sent).
    pub fn to_base64_field(&self, with_nul: bool) -> String {
        let mut pem = self.to_pem().into_bytes();
        if with_nul {
            pem.push(0);
        }
        STANDARD.encode(pem)
    }

    /// Verifies an RSASSA-PKCS1-v1_5 SHA-512 signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), IdentityError> {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA512, &self.spki)
            .verify(msg, sig)
            .map_err(|_| IdentityError::BadSignature)
    }

    /// Verifies a base64 signature field (the name server's `signature`).
    pub fn verify_base64(&self, msg: &[u8], sig_b64: &str) -> Result<(), IdentityError> {
        let sig = STANDARD
            .decode(sig_b64.trim().as_bytes())
            .map_err(|_| IdentityError::Base64)?;
        self.verify(msg, &sig)
    }
}

/// An RSA identity: private key, public key and Jami ID. `Debug` shows nothing secret.
pub struct Identity {
    key: KeyPair,
    public: PublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("bits", &self.public.bits)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh RSA key of the given size (slow: about a second for 4096 bits).
    pub fn generate(bits: KeyBits) -> Result<Self, IdentityError> {
        let key = KeyPair::generate(bits.size()).map_err(|_| IdentityError::Crypto)?;
        Self::from_key_pair(key)
    }

    fn from_key_pair(key: KeyPair) -> Result<Self, IdentityError> {
        use aws_lc_rs::signature::KeyPair as _;
        let public = PublicKey::from_der(key.public_key().as_ref())?;
        Ok(Self { key, public })
    }

    /// Imports an unencrypted PKCS#8 DER private key (or PKCS#1 `RSAPrivateKey` DER).
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let key = KeyPair::from_pkcs8(der)
            .or_else(|_| KeyPair::from_der(der))
            .map_err(|_| IdentityError::Key)?;
        Self::from_key_pair(key)
    }

    /// Imports a PEM `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1) block.
    pub fn from_pem(text: &[u8]) -> Result<Self, IdentityError> {
        let (label, der) = pem_decode(text)?;
        if label != PEM_PRIVATE && label != PEM_RSA_PRIVATE {
            return Err(IdentityError::Pem);
        }
        Self::from_der(&der)
    }

    /// The private key as PKCS#8 DER. Secret: write it only to a file with restricted mode.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, IdentityError> {
        let der = self.key.as_der().map_err(|_| IdentityError::Crypto)?;
        Ok(der.as_ref().to_vec())
    }

    /// The private key as PKCS#8 PEM. Secret.
    pub fn to_pkcs8_pem(&self) -> Result<String, IdentityError> {
        Ok(pem_encode(PEM_PRIVATE, &self.to_pkcs8_der()?))
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The Jami ID.
    pub fn id(&self) -> JamiId {
        self.public.id()
    }

    /// Signs `msg` with RSASSA-PKCS1-v1_5 SHA-512.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&signature::RSA_PKCS1_SHA512, &rng, msg, &mut sig)
            .map_err(|_| IdentityError::Crypto)?;
        Ok(sig)
    }

    /// Signs `msg` and returns the base64 text the name server expects in `signature`.
    pub fn sign_base64(&self, msg: &[u8]) -> Result<String, IdentityError> {
        Ok(STANDARD.encode(self.sign(msg)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    fn key() -> &'static Identity {
        static KEY: OnceLock<Identity> = OnceLock::new();
        KEY.get_or_init(|| Identity::generate(KeyBits::Rsa2048).unwrap())
    }

    #[test]
    fn id_is_sha1_of_spki_and_pem_round_trips() {
        let id = key();
        let pk = id.public_key();
        assert_eq!(pk.bits(), 2048);
        let sha = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, pk.spki_der());
        assert_eq!(id.id().as_bytes().as_slice(), sha.as_ref());
        assert_eq!(id.id().to_hex().len(), 40);
        assert_eq!(id.id().to_hex(), id.id().to_hex().to_lowercase());
        let pem = pk.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(&PublicKey::from_pem(pem.as_bytes()).unwrap(), pk);
    }

    #[test]
    fn base64_field_with_and_without_nul_and_der() {
        let pk = key().public_key();
        let with_nul = pk.to_base64_field(true);
        let raw = STANDARD.decode(&with_nul).unwrap();
        assert_eq!(raw.last(), Some(&0));
        assert_eq!(&PublicKey::from_base64_field(&with_nul).unwrap(), pk);
        assert_eq!(
            &PublicKey::from_base64_field(&pk.to_base64_field(false)).unwrap(),
            pk
        );
        let der_b64 = STANDARD.encode(pk.spki_der());
        assert_eq!(&PublicKey::from_base64_field(&der_b64).unwrap(), pk);
        assert_eq!(
            PublicKey::from_base64_field("!!!"),
            Err(IdentityError::Base64)
        );
        assert!(
            PublicKey::from_base64_field(
                &STANDARD.encode(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            )
            .is_err()
        );
    }

    #[test]
    fn sign_verify_pkcs1_sha512() {
        let id = key();
        let sig = id.sign(b"alice").unwrap();
        assert_eq!(sig.len(), 256);
        id.public_key().verify(b"alice", &sig).unwrap();
        assert_eq!(
            id.public_key().verify(b"alice2", &sig),
            Err(IdentityError::BadSignature)
        );
        let b64 = id.sign_base64(b"bob").unwrap();
        id.public_key().verify_base64(b"bob", &b64).unwrap();
        // PSS signatures are not accepted.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut pss = vec![0u8; 256];
        id.key
            .sign(&signature::RSA_PSS_SHA512, &rng, b"alice", &mut pss)
            .unwrap();
        assert!(id.public_key().verify(b"alice", &pss).is_err());
    }

    #[test]
    fn private_key_round_trips_through_pkcs8_pem() {
        let id = key();
        let pem = id.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = Identity::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(back.id(), id.id());
        assert!(Identity::from_pem(id.public_key().to_pem().as_bytes()).is_err());
    }

    #[test]
    fn debug_shows_no_material() {
        let id = key();
        let shown = format!("{id:?} {:?} {:?}", id.public_key(), id.id());
        assert!(!shown.contains(&id.id().to_hex()), "{shown}");
        assert!(!shown.contains("MII"), "{shown}");
    }

    proptest! {
        #[test]
        fn importers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = PublicKey::from_der(&bytes);
            let _ = PublicKey::from_pem(&bytes);
            let _ = pem_decode(&bytes);
            let _ = PublicKey::from_base64_field(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn der_with_a_dash_byte_early_is_still_der() {
        // About one RSA-2048 SPKI in nine has a 0x2d ('-') byte among its first 64 bytes; such
        // keys were once taken for PEM and refused.
        for _ in 0..400 {
            let id = Identity::generate(KeyBits::Rsa2048).unwrap();
            let der = id.public_key().spki_der().to_vec();
            if der.iter().take(64).any(|b| *b == b'-') {
                let field = STANDARD.encode(&der);
                let back = PublicKey::from_base64_field(&field).unwrap();
                assert_eq!(back.spki_der(), der.as_slice());
                return;
            }
        }
        panic!("no key with an early dash byte in 400 tries");
    }
}
