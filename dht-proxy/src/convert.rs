//! Conversions between the proxy's value model and the DHT node's (`waypost_protocol::dht`).
//! The push type (`pt`, OpenDHT 4.x) has no place in the 2.4 wire format and is dropped.

use waypost_protocol::dht::{InfoHash, Value as DhtValue};

use crate::value::{Body, Key, Signed, Value};

/// Proxy value → node value (moves the byte fields, no copy).
pub fn to_dht(v: Value) -> DhtValue {
    let mut d = DhtValue {
        id: v.id,
        priority: v.priority,
        ..DhtValue::default()
    };
    match v.body {
        Body::Encrypted { cypher } => d.cypher = cypher,
        Body::Plain {
            type_id,
            data,
            user_type,
            signed,
        } => {
            d.vtype = type_id;
            d.data = data;
            d.user_type = user_type;
            if let Some(s) = signed {
                d.seq = s.seq;
                d.owner = Some(s.owner);
                d.recipient = s.to.map(InfoHash);
                d.signature = s.sig;
            }
        }
    }
    d
}

/// Node value → proxy value.
pub fn from_dht(d: &DhtValue) -> Value {
    let body = if !d.cypher.is_empty() {
        Body::Encrypted {
            cypher: d.cypher.clone(),
        }
    } else {
        Body::Plain {
            type_id: d.vtype,
            data: d.data.clone(),
            user_type: d.user_type.clone(),
            signed: d.owner.as_ref().map(|owner| Signed {
                seq: d.seq,
                owner: owner.clone(),
                to: d.recipient.map(|h| h.0).filter(|k| *k != [0u8; 20]),
                sig: d.signature.clone(),
            }),
        }
    };
    Value {
        id: d.id,
        body,
        priority: d.priority,
        push_type: String::new(),
    }
}

/// Proxy key → node key.
pub fn key_to_dht(k: &Key) -> InfoHash {
    InfoHash(*k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_signatures_survive() {
        let plain = Value {
            priority: 1,
            ..Value::plain(5, 3, b"abc".to_vec(), "text/plain")
        };
        assert!(from_dht(&to_dht(plain.clone())) == plain);
        let enc = Value {
            id: 9,
            body: Body::Encrypted {
                cypher: vec![1; 40],
            },
            priority: 0,
            push_type: String::new(),
        };
        assert!(from_dht(&to_dht(enc.clone())) == enc);
        let signed = Value {
            id: 1,
            body: Body::Plain {
                type_id: 0,
                data: b"x".to_vec(),
                user_type: String::new(),
                signed: Some(Signed {
                    seq: 2,
                    owner: vec![1, 2, 3],
                    to: Some([4; 20]),
                    sig: vec![5; 8],
                }),
            },
            priority: 0,
            push_type: String::new(),
        };
        assert!(from_dht(&to_dht(signed.clone())) == signed);
        assert_eq!(
            to_dht(signed.clone()).to_sign(),
            signed.to_sign_bytes(),
            "both sides sign the same bytes"
        );
    }
}
