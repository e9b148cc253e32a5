//! Persistence of permanent puts and push subscriptions in redb, written through before a
//! request is acknowledged, so a crash loses nothing that was answered.
//!
//! Records are JSON with the absolute expiry (unix ms), so a restart restores the remaining lease.

use std::path::Path;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde_json::{Value as Json, json};

use crate::error::ProxyError;
use crate::push::PushPlatform;
use crate::value::{Key, Value};

const PUTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("permanent_puts");
const SUBS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("push_subscriptions");

/// The push fields of a permanent put or a subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct PushInfo {
    /// Push token (or UnifiedPush endpoint).
    pub token: String,
    /// Client id (`to`).
    pub client_id: String,
    /// Session id (`s`).
    pub session_id: String,
    /// Platform.
    pub platform: PushPlatform,
    /// Topic.
    pub topic: String,
}

/// A stored permanent put.
pub struct PutRecord {
    /// DHT key.
    pub key: Key,
    /// The value.
    pub value: Value,
    /// Lease end, unix ms.
    pub expires_ms: u64,
    /// Push fields, if the put came with a push token.
    pub push: Option<PushInfo>,
    /// Whether its "timeout" push was sent (so a restart neither repeats nor skips it).
    pub timeout_sent: bool,
}

/// A stored subscription.
pub struct SubRecord {
    /// DHT key.
    pub key: Key,
    /// Push fields.
    pub push: PushInfo,
    /// Lease end, unix ms.
    pub expires_ms: u64,
    /// Whether its "timeout" push was sent.
    pub timeout_sent: bool,
}

/// The state database.
pub struct Store {
    db: Database,
}

fn err<E>(what: &'static str) -> impl FnOnce(E) -> ProxyError {
    move |_| ProxyError::Store(what)
}

fn put_id(key: &Key, id: u64) -> Vec<u8> {
    let mut k = key.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn sub_id(key: &Key, token: &str, client_id: &str) -> Vec<u8> {
    let mut k = key.to_vec();
    k.extend_from_slice(token.as_bytes());
    k.push(0);
    k.extend_from_slice(client_id.as_bytes());
    k
}

fn push_json(p: &PushInfo) -> Json {
    json!({"token": p.token, "cid": p.client_id, "sid": p.session_id, "t": p.platform.code(), "top": p.topic})
}

fn push_from(j: &Json) -> Option<PushInfo> {
    Some(PushInfo {
        token: j.get("token")?.as_str()?.to_owned(),
        client_id: j.get("cid")?.as_str()?.to_owned(),
        session_id: j.get("sid")?.as_str()?.to_owned(),
        platform: PushPlatform::from_code(j.get("t")?.as_u64()?),
        topic: j.get("top")?.as_str()?.to_owned(),
    })
}

impl Store {
    /// Opens (or creates) `dir/dht-proxy.redb`.
    pub fn open(dir: &Path) -> Result<Self, ProxyError> {
        std::fs::create_dir_all(dir).map_err(err("cannot create the data directory"))?;
        let db = Database::create(dir.join("dht-proxy.redb"))
            .map_err(err("cannot open the database"))?;
        let txn = db.begin_write().map_err(err("write transaction"))?;
        {
            txn.open_table(PUTS).map_err(err("open table"))?;
            txn.open_table(SUBS).map_err(err("open table"))?;
        }
        txn.commit().map_err(err("commit"))?;
        Ok(Self { db })
    }

    fn write(
        &self,
        table: TableDefinition<'_, &[u8], &[u8]>,
        k: &[u8],
        v: Option<&[u8]>,
    ) -> Result<(), ProxyError> {
        let txn = self.db.begin_write().map_err(err("write transaction"))?;
        {
            let mut t = txn.open_table(table).map_err(err("open table"))?;
            match v {
                Some(v) => {
                    t.insert(k, v).map_err(err("insert"))?;
                }
                None => {
                    t.remove(k).map_err(err("remove"))?;
                }
            }
        }
        txn.commit().map_err(err("commit"))
    }

    /// Records a permanent put.
    pub fn save_put(&self, r: &PutRecord) -> Result<(), ProxyError> {
        let rec = json!({
            "value": r.value.to_json_string(false),
            "exp": r.expires_ms,
            "push": r.push.as_ref().map(push_json),
            "ts": r.timeout_sent,
        });
        self.write(
            PUTS,
            &put_id(&r.key, r.value.id),
            Some(rec.to_string().as_bytes()),
        )
    }

    /// Forgets a permanent put.
    pub fn delete_put(&self, key: &Key, id: u64) -> Result<(), ProxyError> {
        self.write(PUTS, &put_id(key, id), None)
    }

    /// Records a subscription.
    pub fn save_sub(&self, r: &SubRecord) -> Result<(), ProxyError> {
        let rec = json!({"push": push_json(&r.push), "exp": r.expires_ms, "ts": r.timeout_sent});
        self.write(
            SUBS,
            &sub_id(&r.key, &r.push.token, &r.push.client_id),
            Some(rec.to_string().as_bytes()),
        )
    }

    /// Forgets a subscription.
    pub fn delete_sub(&self, key: &Key, token: &str, client_id: &str) -> Result<(), ProxyError> {
        self.write(SUBS, &sub_id(key, token, client_id), None)
    }

    /// Everything stored. Unreadable records are skipped.
    pub fn load(&self) -> Result<(Vec<PutRecord>, Vec<SubRecord>), ProxyError> {
        let txn = self.db.begin_read().map_err(err("read transaction"))?;
        let mut puts = Vec::new();
        let t = txn.open_table(PUTS).map_err(err("open table"))?;
        for row in t.iter().map_err(err("iterate"))? {
            let (k, v) = row.map_err(err("read"))?;
            let Ok(key) = <Key>::try_from(&k.value()[..20.min(k.value().len())]) else {
                continue;
            };
            let Ok(j) = serde_json::from_slice::<Json>(v.value()) else {
                continue;
            };
            let Some(vj) = j
                .get("value")
                .and_then(Json::as_str)
                .and_then(|s| serde_json::from_str::<Json>(s).ok())
            else {
                continue;
            };
            let Ok((value, _)) = Value::from_json(&vj) else {
                continue;
            };
            let Some(expires_ms) = j.get("exp").and_then(Json::as_u64) else {
                continue;
            };
            let push = j.get("push").and_then(push_from);
            puts.push(PutRecord {
                key,
                value,
                expires_ms,
                push,
                timeout_sent: j.get("ts").and_then(Json::as_bool).unwrap_or(false),
            });
        }
        let mut subs = Vec::new();
        let t = txn.open_table(SUBS).map_err(err("open table"))?;
        for row in t.iter().map_err(err("iterate"))? {
            let (k, v) = row.map_err(err("read"))?;
            let Ok(key) = <Key>::try_from(&k.value()[..20.min(k.value().len())]) else {
                continue;
            };
            let Ok(j) = serde_json::from_slice::<Json>(v.value()) else {
                continue;
            };
            let (Some(push), Some(expires_ms)) = (
                j.get("push").and_then(push_from),
                j.get("exp").and_then(Json::as_u64),
            ) else {
                continue;
            };
            subs.push(SubRecord {
                key,
                push,
                expires_ms,
                timeout_sent: j.get("ts").and_then(Json::as_bool).unwrap_or(false),
            });
        }
        Ok((puts, subs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let push = PushInfo {
            token: "T".into(),
            client_id: "c".into(),
            session_id: "s".into(),
            platform: PushPlatform::Ios,
            topic: "top".into(),
        };
        {
            let s = Store::open(dir.path()).unwrap();
            let v = Value::plain(42, 0, b"x".to_vec(), "");
            s.save_put(&PutRecord {
                key: [1; 20],
                value: v,
                expires_ms: 99,
                push: Some(push.clone()),
                timeout_sent: true,
            })
            .unwrap();
            s.save_put(&PutRecord {
                key: [1; 20],
                value: Value::plain(43, 0, vec![], ""),
                expires_ms: 5,
                push: None,
                timeout_sent: false,
            })
            .unwrap();
            s.delete_put(&[1; 20], 43).unwrap();
            s.save_sub(&SubRecord {
                key: [2; 20],
                push: push.clone(),
                expires_ms: 7,
                timeout_sent: false,
            })
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let (puts, subs) = s.load().unwrap();
        assert_eq!(puts.len(), 1);
        assert_eq!(puts[0].value.id, 42);
        assert_eq!(puts[0].expires_ms, 99);
        assert!(puts[0].push.as_ref() == Some(&push));
        assert!(puts[0].timeout_sent);
        assert!(!subs[0].timeout_sent);
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].key, [2; 20]);
        assert!(subs[0].push == push);
        s.delete_sub(&[2; 20], "T", "c").unwrap();
        assert!(s.load().unwrap().1.is_empty());
    }
}
