//! DHT values (A.8), queries and field projections (A.9), signatures.

use rmpv::Value as Mp;

use super::infohash::InfoHash;

/// Largest value size accepted (`MAX_VALUE_SIZE`).
pub const MAX_VALUE_SIZE: usize = 65_536;

/// A DHT value. `Debug` prints sizes only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Value {
    /// Value id (0 = unset/invalid on the wire).
    pub id: u64,
    /// Value type id (0 = user data).
    pub vtype: u16,
    /// Payload.
    pub data: Vec<u8>,
    /// User type, e.g. `text/plain`.
    pub user_type: String,
    /// Sequence number (signed values).
    pub seq: u16,
    /// Owner public key, DER SubjectPublicKeyInfo (signed values).
    pub owner: Option<Vec<u8>>,
    /// Recipient key id (encrypted values).
    pub recipient: Option<InfoHash>,
    /// RSA PKCS#1 v1.5 SHA-512 signature over [`Value::to_sign`].
    pub signature: Vec<u8>,
    /// Encrypted body (opaque); non-empty means the value is encrypted.
    pub cypher: Vec<u8>,
    /// Priority (0 = urgent).
    pub priority: u64,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("type", &self.vtype)
            .field("data_len", &self.data.len())
            .field("signed", &self.owner.is_some())
            .field("encrypted", &self.is_encrypted())
            .finish_non_exhaustive()
    }
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a map or missing `id`/`dat`.
    #[error("value is not a map with id and dat")]
    Shape,
    /// Body lacks `type` or `data`.
    #[error("value body lacks type or data")]
    Body,
    /// Signed body lacks `seq` or `sig`.
    #[error("signed value lacks seq or sig")]
    Signature,
    /// Bytes are not msgpack.
    #[error("value is not valid msgpack")]
    Msgpack,
}

/// Looks up `key` in a msgpack map.
pub(crate) fn get<'a>(m: &'a [(Mp, Mp)], key: &str) -> Option<&'a Mp> {
    m.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// A blob: bin, str or array of u8.
pub(crate) fn blob(v: &Mp) -> Option<Vec<u8>> {
    match v {
        Mp::Binary(b) => Some(b.clone()),
        Mp::String(s) => Some(s.as_bytes().to_vec()),
        Mp::Array(a) => a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect(),
        _ => None,
    }
}

/// A 20-byte hash: bin of exactly 20 bytes.
pub(crate) fn hash(v: &Mp) -> Option<InfoHash> {
    match v {
        Mp::Binary(b) => InfoHash::from_slice(b),
        _ => None,
    }
}

fn s(k: &str) -> Mp {
    Mp::from(k)
}

impl Value {
    /// A plain (unsigned) value of type 0.
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// Whether the value carries an encrypted body.
    pub fn is_encrypted(&self) -> bool {
        !self.cypher.is_empty()
    }

    /// Whether the value is signed (has an owner).
    pub fn is_signed(&self) -> bool {
        self.owner.is_some()
    }

    /// Size used for storage limits: cypher + data + sig + utype.
    pub fn size(&self) -> usize {
        self.cypher.len() + self.data.len() + self.signature.len() + self.user_type.len()
    }

    /// Owner key id: SHA-1 of the DER public key (zero if unsigned).
    pub fn owner_id(&self) -> InfoHash {
        self.owner.as_ref().map(InfoHash::get).unwrap_or_default()
    }

    /// The BODY map (A.8), keys in canonical order.
    fn body(&self) -> Mp {
        let mut m = Vec::with_capacity(6);
        if let Some(owner) = &self.owner {
            m.push((s("seq"), Mp::from(self.seq)));
            m.push((s("owner"), Mp::Binary(owner.clone())));
            if let Some(to) = &self.recipient {
                m.push((s("to"), Mp::Binary(to.0.to_vec())));
            }
        }
        m.push((s("type"), Mp::from(self.vtype)));
        m.push((s("data"), Mp::Binary(self.data.clone())));
        if !self.user_type.is_empty() {
            m.push((s("utype"), Mp::from(self.user_type.as_str())));
        }
        Mp::Map(m)
    }

    /// The canonical bytes covered by the signature.
    pub fn to_sign(&self) -> Vec<u8> {
        encode(&self.body())
    }

    /// The wire form (msgpack object).
    pub fn to_msgpack(&self) -> Mp {
        let dat = if self.is_encrypted() {
            Mp::Binary(self.cypher.clone())
        } else {
            let mut d = vec![(s("body"), self.body())];
            if self.owner.is_some() {
                d.push((s("sig"), Mp::Binary(self.signature.clone())));
            }
            Mp::Map(d)
        };
        let mut m = vec![(s("id"), Mp::from(self.id)), (s("dat"), dat)];
        if self.priority != 0 {
            m.push((s("p"), Mp::from(self.priority)));
        }
        Mp::Map(m)
    }

    /// The packed wire form.
    pub fn pack(&self) -> Vec<u8> {
        encode(&self.to_msgpack())
    }

    /// Decodes the packed wire form.
    pub fn unpack(bytes: &[u8]) -> Result<Self, ValueError> {
        let mut rd = bytes;
        let v = rmpv::decode::read_value_with_max_depth(&mut rd, 16)
            .map_err(|_| ValueError::Msgpack)?;
        Self::from_msgpack(&v)
    }

    /// Decodes a value from its msgpack object.
    pub fn from_msgpack(v: &Mp) -> Result<Self, ValueError> {
        let m = v.as_map().ok_or(ValueError::Shape)?;
        if m.len() < 2 {
            return Err(ValueError::Shape);
        }
        let id = get(m, "id").and_then(Mp::as_u64).ok_or(ValueError::Shape)?;
        let dat = get(m, "dat").ok_or(ValueError::Shape)?;
        let priority = get(m, "p").and_then(Mp::as_u64).unwrap_or(0);
        let mut val = Self {
            id,
            priority,
            ..Self::default()
        };
        match dat {
            Mp::Map(d) => {
                let body = get(d, "body")
                    .and_then(Mp::as_map)
                    .ok_or(ValueError::Body)?;
                val.data = get(body, "data").and_then(blob).ok_or(ValueError::Body)?;
                val.vtype = get(body, "type")
                    .and_then(Mp::as_u64)
                    .and_then(|t| u16::try_from(t).ok())
                    .ok_or(ValueError::Body)?;
                if let Some(u) = get(body, "utype") {
                    let b = blob(u).ok_or(ValueError::Body)?;
                    val.user_type = String::from_utf8(b).map_err(|_| ValueError::Body)?;
                }
                if let Some(owner) = get(body, "owner") {
                    val.owner = Some(blob(owner).ok_or(ValueError::Signature)?);
                    val.seq = get(body, "seq")
                        .and_then(Mp::as_u64)
                        .and_then(|t| u16::try_from(t).ok())
                        .ok_or(ValueError::Signature)?;
                    val.signature = get(d, "sig").and_then(blob).ok_or(ValueError::Signature)?;
                    if let Some(to) = get(body, "to") {
                        val.recipient = Some(hash(to).ok_or(ValueError::Signature)?);
                    }
                }
            }
            other => {
                val.cypher = blob(other).ok_or(ValueError::Shape)?;
                if val.cypher.is_empty() {
                    return Err(ValueError::Shape);
                }
            }
        }
        Ok(val)
    }

    /// Verifies the RSA PKCS#1 v1.5 SHA-512 signature of a signed value. Unsigned values: false.
    pub fn verify_signature(&self) -> bool {
        let Some(owner) = &self.owner else {
            return false;
        };
        verify_rsa_sha512(owner, &self.to_sign(), &self.signature)
    }

    /// Identical content as OpenDHT's `==` (id, owner, type, data, utype, sig, cypher).
    pub fn same_content(&self, o: &Self) -> bool {
        self.id == o.id
            && self.owner == o.owner
            && self.vtype == o.vtype
            && self.data == o.data
            && self.user_type == o.user_type
            && self.signature == o.signature
            && self.cypher == o.cypher
    }
}

/// Verifies an RSA PKCS#1 v1.5 SHA-512 signature with a DER public key (SPKI or PKCS#1).
pub fn verify_rsa_sha512(public_key_der: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA512, UnparsedPublicKey};
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA512, public_key_der)
        .verify(msg, sig)
        .is_ok()
}

/// Writes a msgpack object to bytes.
pub fn encode(v: &Mp) -> Vec<u8> {
    // Most DHT messages fit: one allocation instead of a few doublings.
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// Value fields usable in select/where (A.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Field {
    /// Value id.
    Id = 1,
    /// Value type.
    ValueType = 2,
    /// Owner key id.
    OwnerPk = 3,
    /// Sequence number.
    SeqNum = 4,
    /// User type.
    UserType = 5,
}

impl Field {
    /// From the wire number.
    pub fn from_u64(n: u64) -> Option<Self> {
        Some(match n {
            1 => Self::Id,
            2 => Self::ValueType,
            3 => Self::OwnerPk,
            4 => Self::SeqNum,
            5 => Self::UserType,
            _ => return None,
        })
    }
}

/// A where-condition operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// Id, type or seq.
    Int(u64),
    /// Owner key id.
    Hash(InfoHash),
    /// User type bytes.
    Bytes(Vec<u8>),
}

/// A query: select fields and where equalities (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Selected fields; empty = full values.
    pub select: Vec<Field>,
    /// Where equalities.
    pub filters: Vec<(Field, FieldValue)>,
}

impl Query {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only the value with `id`.
    pub fn by_id(id: u64) -> Self {
        Self {
            select: vec![],
            filters: vec![(Field::Id, FieldValue::Int(id))],
        }
    }

    /// Whether `v` satisfies every filter.
    pub fn matches(&self, v: &Value) -> bool {
        self.filters.iter().all(|(f, x)| match (f, x) {
            (Field::Id, FieldValue::Int(n)) => v.id == *n,
            (Field::ValueType, FieldValue::Int(n)) => u64::from(v.vtype) == *n,
            (Field::SeqNum, FieldValue::Int(n)) => u64::from(v.seq) == *n,
            (Field::OwnerPk, FieldValue::Hash(h)) => v.owner_id() == *h,
            (Field::UserType, FieldValue::Bytes(b)) => v.user_type.as_bytes() == b.as_slice(),
            _ => false,
        })
    }

    /// Wire form `{"s":[..],"w":[..]}`. Seq filters cannot be sent (A.9) and are dropped.
    pub fn to_msgpack(&self) -> Mp {
        let sel = self.select.iter().map(|f| Mp::from(*f as u8)).collect();
        let w = self
            .filters
            .iter()
            .filter(|(f, _)| *f != Field::SeqNum)
            .map(|(f, x)| {
                let v = match x {
                    FieldValue::Int(n) => Mp::from(*n),
                    FieldValue::Hash(h) => Mp::Binary(h.0.to_vec()),
                    FieldValue::Bytes(b) => Mp::Binary(b.clone()),
                };
                Mp::Map(vec![(s("f"), Mp::from(*f as u8)), (s("v"), v)])
            })
            .collect();
        Mp::Map(vec![(s("s"), Mp::Array(sel)), (s("w"), Mp::Array(w))])
    }

    /// Parses the wire form; `None` makes the whole request invalid (as the reference does).
    pub fn from_msgpack(v: &Mp) -> Option<Self> {
        let m = v.as_map()?;
        let sel = get(m, "s")?.as_array()?;
        let w = get(m, "w")?.as_array()?;
        let mut q = Self::default();
        for f in sel {
            q.select.push(Field::from_u64(f.as_u64()?)?);
        }
        q.select.sort();
        q.select.dedup();
        for c in w {
            let cm = c.as_map()?;
            let f = Field::from_u64(get(cm, "f")?.as_u64()?)?;
            let x = get(cm, "v")?;
            let fv = match f {
                Field::Id | Field::ValueType => FieldValue::Int(x.as_u64()?),
                Field::OwnerPk => FieldValue::Hash(hash(x)?),
                Field::UserType => FieldValue::Bytes(blob(x)?),
                Field::SeqNum => return None,
            };
            q.filters.push((f, fv));
        }
        Some(q)
    }

    /// The `fileds` reply for `values` (A.9).
    pub fn fields_reply<'a>(&self, values: impl Iterator<Item = &'a Value>) -> Mp {
        let f: Vec<Mp> = self.select.iter().map(|f| Mp::from(*f as u8)).collect();
        let mut flat = Vec::new();
        for v in values {
            for fld in &self.select {
                flat.push(match fld {
                    Field::Id => Mp::from(v.id),
                    Field::ValueType => Mp::from(v.vtype),
                    Field::SeqNum => Mp::from(v.seq),
                    Field::OwnerPk => Mp::Binary(v.owner_id().0.to_vec()),
                    Field::UserType => Mp::from(v.user_type.as_str()),
                });
            }
        }
        Mp::Map(vec![(s("f"), Mp::Array(f)), (s("v"), Mp::Array(flat))])
    }
}

/// One row of a parsed `fileds` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldRow {
    /// Id, if selected.
    pub id: Option<u64>,
    /// Seq, if selected.
    pub seq: Option<u64>,
}

/// Parses a `fileds` map into rows (only id and seq are kept).
pub fn parse_fields(v: &Mp) -> Option<Vec<FieldRow>> {
    let m = v.as_map()?;
    let f: Vec<u64> = get(m, "f")?
        .as_array()?
        .iter()
        .map(Mp::as_u64)
        .collect::<Option<_>>()?;
    let vals = get(m, "v")?.as_array()?;
    if f.is_empty() || vals.len() % f.len() != 0 {
        return None;
    }
    Some(
        vals.chunks(f.len())
            .map(|row| {
                let mut r = FieldRow::default();
                for (fi, x) in f.iter().zip(row) {
                    match fi {
                        1 => r.id = x.as_u64(),
                        4 => r.seq = x.as_u64(),
                        _ => {}
                    }
                }
                r
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_value_round_trip_matches_transcript() {
        // From D.6: {'id':2523854693626249069,'dat':{'body':{'type':0,'data':"hello world",'utype':'text/plain'}}}
        let hexv = "82a26964cf23068878ce4b7f6da364617481a4626f647983a47479706500a464617461c40b68656c6c6f20776f726c64a57574797065aa746578742f706c61696e";
        let bytes = hex::decode(hexv).unwrap();
        let v = Value::unpack(&bytes).unwrap();
        assert_eq!(v.id, 2523854693626249069);
        assert_eq!(v.data, b"hello world");
        assert_eq!(v.user_type, "text/plain");
        assert_eq!(v.pack(), bytes, "re-encoding is byte exact");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Value::unpack(&[0x80]).is_err());
        assert!(Value::unpack(&[0xc1]).is_err());
        let mut v = Value::new(b"x".to_vec());
        v.id = 1;
        v.owner = Some(vec![1, 2, 3]);
        let mut m = v.to_msgpack();
        // Drop "sig".
        if let Mp::Map(mm) = &mut m {
            if let Mp::Map(d) = &mut mm[1].1 {
                d.truncate(1);
            }
        }
        assert_eq!(Value::from_msgpack(&m), Err(ValueError::Signature));
    }

    #[test]
    fn query_round_trip_and_fields() {
        let q = Query {
            select: vec![Field::Id, Field::SeqNum],
            filters: vec![(Field::UserType, FieldValue::Bytes(b"text/plain".to_vec()))],
        };
        let back = Query::from_msgpack(&q.to_msgpack()).unwrap();
        assert_eq!(back, q);
        let mut a = Value::new(b"a".to_vec());
        a.id = 2523854693626249069;
        a.user_type = "text/plain".into();
        let mut b = Value::new(b"b".to_vec());
        b.id = 4205096940252648560;
        assert!(q.matches(&a) && !q.matches(&b));
        let r = q.fields_reply([&a, &b].into_iter());
        let rows = parse_fields(&r).unwrap();
        assert_eq!(rows[0].id, Some(2523854693626249069));
        assert_eq!(rows[1].seq, Some(0));
        // Seq in a where is invalid on the wire.
        let bad = Mp::Map(vec![
            (s("s"), Mp::Array(vec![])),
            (
                s("w"),
                Mp::Array(vec![Mp::Map(vec![
                    (s("f"), Mp::from(4)),
                    (s("v"), Mp::from(1)),
                ])]),
            ),
        ]);
        assert!(Query::from_msgpack(&bad).is_none());
    }

    #[test]
    fn rsa_signature_verifies_and_tamper_fails() {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::rsa::KeySize;
        use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA512, RsaKeyPair};
        let kp = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let spki = kp.public_key().as_der().unwrap().as_ref().to_vec();
        let mut v = Value::new(b"hello-signed".to_vec());
        v.id = 7;
        v.user_type = "text/plain".into();
        v.owner = Some(spki);
        let mut sig = vec![0; kp.public_modulus_len()];
        kp.sign(
            &RSA_PKCS1_SHA512,
            &aws_lc_rs::rand::SystemRandom::new(),
            &v.to_sign(),
            &mut sig,
        )
        .unwrap();
        v.signature = sig;
        let back = Value::unpack(&v.pack()).unwrap();
        assert!(back.verify_signature());
        let mut t = back;
        t.data = b"hello-signEd".to_vec();
        assert!(!t.verify_signature());
    }
}
