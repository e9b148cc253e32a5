//! The proxy's view of a DHT value and its JSON form (spec A.8).
//!
//! JSON keys are written sorted and compact, ids as decimal strings, binary fields as standard
//! padded base64, the owner key as PEM. Input is lenient where the reference is: the id may be a
//! string or a number, the owner PEM or base64 DER.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::{Map, Value as Json};

/// Largest value accepted (sum of data, cypher, signature and user type sizes).
pub const MAX_VALUE_SIZE: usize = 65_536;

/// A 20-byte DHT key.
pub type Key = [u8; 20];

/// Signature fields of a signed value.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    /// Sequence number.
    pub seq: u16,
    /// Owner public key, DER SubjectPublicKeyInfo.
    pub owner: Vec<u8>,
    /// Recipient key id, if any.
    pub to: Option<Key>,
    /// RSA PKCS#1 v1.5 SHA-512 signature over the body.
    pub sig: Vec<u8>,
}

/// The body of a value.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// A clear value, possibly signed.
    Plain {
        /// Value type id.
        type_id: u16,
        /// Payload.
        data: Vec<u8>,
        /// User type, e.g. "text/plain".
        user_type: String,
        /// Signature fields, if the value is signed.
        signed: Option<Signed>,
    },
    /// An encrypted value: opaque to the proxy.
    Encrypted {
        /// Ciphertext.
        cypher: Vec<u8>,
    },
}

/// A DHT value. No `Debug`: it may hold user data.
#[derive(Clone, PartialEq, Eq)]
pub struct Value {
    /// Value id (0 = unset).
    pub id: u64,
    /// Clear or encrypted body.
    pub body: Body,
    /// Priority (0 = urgent).
    pub priority: u64,
    /// Push type (HEAD), not covered by signatures.
    pub push_type: String,
}

/// A JSON value that could not be parsed. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a JSON object, or a field has the wrong type or encoding.
    #[error("invalid value JSON")]
    Invalid,
}

impl Value {
    /// A plain unsigned value.
    pub fn plain(id: u64, type_id: u16, data: Vec<u8>, user_type: &str) -> Self {
        Self {
            id,
            body: Body::Plain {
                type_id,
                data,
                user_type: user_type.to_owned(),
                signed: None,
            },
            priority: 0,
            push_type: String::new(),
        }
    }

    /// The size counted against [`MAX_VALUE_SIZE`].
    pub fn size(&self) -> usize {
        let body = match &self.body {
            Body::Plain {
                data,
                user_type,
                signed,
                ..
            } => data.len() + user_type.len() + signed.as_ref().map_or(0, |s| s.sig.len()),
            Body::Encrypted { cypher } => cypher.len(),
        };
        body + self.push_type.len()
    }

    /// The value type id (0 for encrypted values, whose type is hidden).
    pub fn type_id(&self) -> u16 {
        match &self.body {
            Body::Plain { type_id, .. } => *type_id,
            Body::Encrypted { .. } => 0,
        }
    }

    /// Whether everything but the id is the same (used to deduplicate permanent puts).
    pub fn same_content(&self, other: &Self) -> bool {
        self.body == other.body
            && self.priority == other.priority
            && self.push_type == other.push_type
    }

    /// Whether this value may be stored or forwarded: encrypted values always pass (the proxy
    /// cannot check them), signed values only with a valid signature.
    pub fn is_acceptable(&self) -> bool {
        match &self.body {
            Body::Encrypted { .. } => true,
            Body::Plain { signed: None, .. } => true,
            Body::Plain {
                signed: Some(s), ..
            } => {
                let to_sign = self.to_sign_bytes();
                aws_lc_rs::signature::UnparsedPublicKey::new(
                    &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA512,
                    &s.owner,
                )
                .verify(&to_sign, &s.sig)
                .is_ok()
            }
        }
    }

    /// The msgpack bytes a signature covers (spec A.8 BODY, keys in wire order).
    pub fn to_sign_bytes(&self) -> Vec<u8> {
        use rmpv::Value as M;
        let mut entries: Vec<(M, M)> = Vec::with_capacity(6);
        if let Body::Plain {
            type_id,
            data,
            user_type,
            signed,
        } = &self.body
        {
            if let Some(s) = signed {
                entries.push((M::from("seq"), M::from(u64::from(s.seq))));
                entries.push((M::from("owner"), M::Binary(s.owner.clone())));
                if let Some(to) = s.to {
                    entries.push((M::from("to"), M::Binary(to.to_vec())));
                }
            }
            entries.push((M::from("type"), M::from(u64::from(*type_id))));
            entries.push((M::from("data"), M::Binary(data.clone())));
            if !user_type.is_empty() {
                entries.push((M::from("utype"), M::from(user_type.as_str())));
            }
        }
        let mut out = Vec::with_capacity(64);
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &M::Map(entries));
        out
    }

    /// Parses the proxy JSON form. Returns the value and the `permanent` member, if present.
    pub fn from_json(j: &Json) -> Result<(Self, Option<Json>), ValueError> {
        let obj = j.as_object().ok_or(ValueError::Invalid)?;
        let id = match obj.get("id") {
            None | Some(Json::Null) => 0,
            Some(Json::String(s)) => {
                if s.is_empty() {
                    0
                } else {
                    s.parse::<u64>().map_err(|_| ValueError::Invalid)?
                }
            }
            Some(Json::Number(n)) => n.as_u64().ok_or(ValueError::Invalid)?,
            Some(_) => return Err(ValueError::Invalid),
        };
        let priority = match obj.get("prio") {
            None => 0,
            Some(v) => v.as_u64().ok_or(ValueError::Invalid)?,
        };
        let push_type = opt_str(obj, "pt")?.unwrap_or_default();
        let body = if let Some(c) = obj.get("cypher") {
            Body::Encrypted { cypher: b64(c)? }
        } else {
            let data = match obj.get("data") {
                None => Vec::new(),
                Some(d) => b64(d)?,
            };
            let type_id = match obj.get("type") {
                None => 0,
                Some(t) => u16::try_from(t.as_u64().ok_or(ValueError::Invalid)?)
                    .map_err(|_| ValueError::Invalid)?,
            };
            let user_type = opt_str(obj, "utype")?.unwrap_or_default();
            let signed = match obj.get("owner") {
                None => None,
                Some(o) => {
                    let owner = parse_owner(o.as_str().ok_or(ValueError::Invalid)?)?;
                    let seq = match obj.get("seq") {
                        None => 0,
                        Some(s) => u16::try_from(s.as_u64().ok_or(ValueError::Invalid)?)
                            .map_err(|_| ValueError::Invalid)?,
                    };
                    let sig = match obj.get("sig") {
                        None => Vec::new(),
                        Some(s) => b64(s)?,
                    };
                    let to = match opt_str(obj, "to")? {
                        None => None,
                        Some(t) if t.is_empty() => None,
                        Some(t) => {
                            let mut k = [0u8; 20];
                            hex::decode_to_slice(t.as_bytes(), &mut k)
                                .map_err(|_| ValueError::Invalid)?;
                            if k == [0u8; 20] { None } else { Some(k) }
                        }
                    };
                    Some(Signed {
                        seq,
                        owner,
                        to,
                        sig,
                    })
                }
            };
            Body::Plain {
                type_id,
                data,
                user_type,
                signed,
            }
        };
        let permanent = obj.get("permanent").cloned();
        Ok((
            Self {
                id,
                body,
                priority,
                push_type,
            },
            permanent,
        ))
    }

    /// The compact JSON form with sorted keys, without a trailing newline.
    pub fn to_json_string(&self, expired: bool) -> String {
        let mut out = String::with_capacity(64 + self.size() * 4 / 3);
        out.push('{');
        let mut first = true;
        let mut key = |out: &mut String, k: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            out.push_str(k);
            out.push_str("\":");
        };
        // Keys in sorted order: cypher data expired id owner prio pt seq sig to type utype.
        match &self.body {
            Body::Encrypted { cypher } => {
                key(&mut out, "cypher");
                push_b64(&mut out, cypher);
                if expired {
                    key(&mut out, "expired");
                    out.push_str("true");
                }
                key(&mut out, "id");
                push_id(&mut out, self.id);
                if self.priority != 0 {
                    key(&mut out, "prio");
                    out.push_str(&self.priority.to_string());
                }
                if !self.push_type.is_empty() {
                    key(&mut out, "pt");
                    push_str(&mut out, &self.push_type);
                }
            }
            Body::Plain {
                type_id,
                data,
                user_type,
                signed,
            } => {
                key(&mut out, "data");
                push_b64(&mut out, data);
                if expired {
                    key(&mut out, "expired");
                    out.push_str("true");
                }
                key(&mut out, "id");
                push_id(&mut out, self.id);
                if let Some(s) = signed {
                    key(&mut out, "owner");
                    push_str(&mut out, &owner_pem(&s.owner));
                }
                if self.priority != 0 {
                    key(&mut out, "prio");
                    out.push_str(&self.priority.to_string());
                }
                if !self.push_type.is_empty() {
                    key(&mut out, "pt");
                    push_str(&mut out, &self.push_type);
                }
                if let Some(s) = signed {
                    key(&mut out, "seq");
                    out.push_str(&s.seq.to_string());
                    key(&mut out, "sig");
                    push_b64(&mut out, &s.sig);
                    if let Some(to) = s.to {
                        key(&mut out, "to");
                        out.push('"');
                        out.push_str(&hex::encode(to));
                        out.push('"');
                    }
                }
                key(&mut out, "type");
                out.push_str(&type_id.to_string());
                if !user_type.is_empty() {
                    key(&mut out, "utype");
                    push_str(&mut out, user_type);
                }
            }
        }
        out.push('}');
        out
    }

    /// The JSON form followed by `\n`, as one line of a stream or a response body.
    pub fn to_json_line(&self, expired: bool) -> String {
        let mut s = self.to_json_string(expired);
        s.push('\n');
        s
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain { signed: None, .. } => "<plain body>",
            Self::Plain {
                signed: Some(_), ..
            } => "<signed body>",
            Self::Encrypted { .. } => "<encrypted body>",
        })
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted value>")
    }
}

fn opt_str(obj: &Map<String, Json>, k: &str) -> Result<Option<String>, ValueError> {
    match obj.get(k) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ValueError::Invalid),
    }
}

fn b64(j: &Json) -> Result<Vec<u8>, ValueError> {
    let s = j.as_str().ok_or(ValueError::Invalid)?;
    decode_b64(s).ok_or(ValueError::Invalid)
}

/// Decodes standard base64, padded or not.
pub(crate) fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('\n');
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
        .ok()
}

fn parse_owner(s: &str) -> Result<Vec<u8>, ValueError> {
    if let Some(start) = s.find("-----BEGIN PUBLIC KEY-----") {
        let rest = &s[start + "-----BEGIN PUBLIC KEY-----".len()..];
        let end = rest
            .find("-----END PUBLIC KEY-----")
            .ok_or(ValueError::Invalid)?;
        let b: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
        return STANDARD.decode(b).map_err(|_| ValueError::Invalid);
    }
    decode_b64(s).ok_or(ValueError::Invalid)
}

/// PEM form of a DER SubjectPublicKeyInfo, 64 characters per line.
pub(crate) fn owner_pem(der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = String::with_capacity(b.len() + 64);
    out.push_str("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

fn push_b64(out: &mut String, b: &[u8]) {
    out.push('"');
    STANDARD.encode_string(b, out);
    out.push('"');
}

fn push_id(out: &mut String, id: u64) {
    out.push('"');
    out.push_str(&id.to_string());
    out.push('"');
}

fn push_str(out: &mut String, s: &str) {
    // serde_json escapes exactly what JSON requires.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA512, RsaKeyPair};

    use super::*;

    pub(crate) fn signed_value(data: &[u8]) -> Value {
        let kp = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let owner = kp.public_key().as_der().unwrap().as_ref().to_vec();
        let mut v = Value {
            id: 7,
            body: Body::Plain {
                type_id: 0,
                data: data.to_vec(),
                user_type: "text/plain".into(),
                signed: Some(Signed {
                    seq: 3,
                    owner,
                    to: None,
                    sig: vec![],
                }),
            },
            priority: 1,
            push_type: String::new(),
        };
        let msg = v.to_sign_bytes();
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(
            &RSA_PKCS1_SHA512,
            &aws_lc_rs::rand::SystemRandom::new(),
            &msg,
            &mut sig,
        )
        .unwrap();
        if let Body::Plain {
            signed: Some(s), ..
        } = &mut v.body
        {
            s.sig = sig;
        }
        v
    }

    #[test]
    fn json_matches_the_reference_shape() {
        let v = Value::plain(
            2523854693626249069,
            0,
            b"hello world".to_vec(),
            "text/plain",
        );
        assert_eq!(
            v.to_json_string(false),
            r#"{"data":"aGVsbG8gd29ybGQ=","id":"2523854693626249069","type":0,"utype":"text/plain"}"#
        );
        let v = Value::plain(15067213254514772945, 0, b"expireme".to_vec(), "");
        assert_eq!(
            v.to_json_string(true),
            r#"{"data":"ZXhwaXJlbWU=","expired":true,"id":"15067213254514772945","type":0}"#
        );
        let e = Value {
            id: 5,
            body: Body::Encrypted {
                cypher: vec![1, 2, 3],
            },
            priority: 1,
            push_type: "x".into(),
        };
        assert_eq!(
            e.to_json_string(false),
            r#"{"cypher":"AQID","id":"5","prio":1,"pt":"x"}"#
        );
    }

    #[test]
    fn json_round_trip_and_lenient_input() {
        let j: Json =
            serde_json::from_str(r#"{"id":12,"data":"aGk","type":3,"prio":1,"permanent":true}"#)
                .unwrap();
        let (v, perm) = Value::from_json(&j).unwrap();
        assert_eq!(v.id, 12);
        assert_eq!(v.priority, 1);
        assert_eq!(perm, Some(Json::Bool(true)));
        assert!(matches!(&v.body, Body::Plain { data, type_id: 3, .. } if data == b"hi"));
        let back: Json = serde_json::from_str(&v.to_json_string(false)).unwrap();
        assert_eq!(Value::from_json(&back).unwrap().0, v);
        let (empty, _) = Value::from_json(&serde_json::json!({})).unwrap();
        assert_eq!(empty.id, 0);
        for bad in [
            r#"[]"#,
            r#"{"id":"x"}"#,
            r#"{"data":5}"#,
            r#"{"type":70000}"#,
            r#"{"data":"!!"}"#,
        ] {
            let j: Json = serde_json::from_str(bad).unwrap();
            assert!(Value::from_json(&j).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures_are_checked_and_survive_json() {
        let v = signed_value(b"hello-signed");
        assert!(v.is_acceptable());
        let j: Json = serde_json::from_str(&v.to_json_string(false)).unwrap();
        let s = j["owner"].as_str().unwrap();
        assert!(s.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{s}");
        let (back, _) = Value::from_json(&j).unwrap();
        assert!(
            back.is_acceptable(),
            "signature must survive the JSON round trip"
        );
        let mut tampered = back;
        if let Body::Plain { data, .. } = &mut tampered.body {
            data[0] ^= 1;
        }
        assert!(!tampered.is_acceptable());
        let enc = Value {
            id: 1,
            body: Body::Encrypted {
                cypher: vec![9; 600],
            },
            priority: 0,
            push_type: String::new(),
        };
        assert!(enc.is_acceptable(), "encrypted values pass untouched");
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let plain = (
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            "[ -~]{0,12}",
            proptest::option::of((
                any::<u16>(),
                proptest::collection::vec(any::<u8>(), 1..40),
                proptest::option::of(any::<[u8; 20]>().prop_filter("non-zero", |k| *k != [0; 20])),
                proptest::collection::vec(any::<u8>(), 0..40),
            )),
        )
            .prop_map(|(type_id, data, user_type, s)| Body::Plain {
                type_id,
                data,
                user_type,
                signed: s.map(|(seq, owner, to, sig)| Signed {
                    seq,
                    owner,
                    to,
                    sig,
                }),
            });
        let enc = proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|cypher| Body::Encrypted { cypher });
        (
            any::<u64>(),
            prop_oneof![plain, enc],
            any::<u64>(),
            "[a-z\"\\\\]{0,6}",
        )
            .prop_map(|(id, body, priority, push_type)| Value {
                id,
                body,
                priority,
                push_type,
            })
    }

    proptest! {
        #[test]
        fn json_round_trips(v in arb_value()) {
            let j: Json = serde_json::from_str(&v.to_json_string(false)).unwrap();
            let (back, perm) = Value::from_json(&j).unwrap();
            prop_assert!(perm.is_none());
            prop_assert!(back == v);
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,200}") {
            if let Ok(j) = serde_json::from_str::<Json>(&s) {
                let _ = Value::from_json(&j);
            }
        }

        #[test]
        fn decode_arbitrary_objects(m in proptest::collection::btree_map(
            prop_oneof![Just("id"), Just("data"), Just("type"), Just("owner"), Just("sig"), Just("cypher"),
                        Just("seq"), Just("to"), Just("prio"), Just("utype"), Just("pt")],
            prop_oneof![any::<i64>().prop_map(Json::from), "[A-Za-z0-9+/=-]{0,20}".prop_map(Json::from),
                        Just(Json::Null), Just(Json::Bool(true)), any::<f64>().prop_map(Json::from)],
            0..8)) {
            let obj: Map<String, Json> = m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Ok((v, _)) = Value::from_json(&Json::Object(obj)) {
                let j: Json = serde_json::from_str(&v.to_json_string(true)).unwrap();
                prop_assert_eq!(&j["expired"], &Json::Bool(true));
            }
        }
    }
}
