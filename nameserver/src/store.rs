//! Name storage: the [`NameStore`] trait, an in-memory store and the default redb store.
//!
//! The contract (spec nameserver.md §2.5, §3.5):
//! - one name ↔ one address, in both directions; first come, first served;
//! - a record never changes and is never deleted;
//! - [`NameStore::claim`] checks both directions and inserts both in one atomic step, and
//!   returns only once the record is durable (for redb: after an fsync'd commit).
//!
//! Only the five public registry fields are stored. No request metadata (addresses, times,
//! user agents) is ever written.

use std::collections::HashMap;
use std::path::Path;

use parking_lot::RwLock;
use waypost_protocol::identity::JamiId;

/// One registration, as stored and served. Every field is public registry data.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The exact signed name (canonical, lowercase).
    pub name: String,
    /// The Jami ID the name points to.
    #[serde(with = "hex20")]
    pub addr: [u8; 20],
    /// The owner's Ethereum address as sent (never authenticated).
    #[serde(with = "hex20")]
    pub owner: [u8; 20],
    /// The `publickey` field exactly as registered (empty for a legacy registration).
    pub publickey: String,
    /// The `signature` field exactly as registered (empty for a legacy registration).
    pub signature: String,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Record(<redacted>)")
    }
}

mod hex20 {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8; 20], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; 20], D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        let mut out = [0u8; 20];
        hex::decode_to_slice(text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// The result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The record was inserted and is durable.
    Inserted,
    /// The same name is already registered to the same address: nothing changed.
    AlreadyYours,
    /// The name is registered to another address.
    NameTaken,
    /// The address already holds another name (given here, it is public data).
    AddrHasName(String),
}

/// A storage failure. The message is static: it never carries a name or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the name database")]
    Open,
    /// A read failed.
    #[error("name database read failed")]
    Read,
    /// A write or its commit failed: nothing was acknowledged.
    #[error("name database write failed")]
    Write,
    /// A stored record could not be decoded.
    #[error("corrupt record in the name database")]
    Corrupt,
    /// The store is unavailable (tests, maintenance).
    #[error("name database unavailable")]
    Unavailable,
}

/// Storage behind the name server. Implementations are blocking; the server calls them from
/// `spawn_blocking`.
pub trait NameStore: Send + Sync + 'static {
    /// The record registered under `name` (already normalised), if any.
    fn get_by_name(&self, name: &str) -> Result<Option<Record>, StoreError>;
    /// The name registered for `addr`, if any.
    fn get_by_addr(&self, addr: &JamiId) -> Result<Option<String>, StoreError>;
    /// Registers `record` if neither its name nor its address is taken. Atomic; returns only
    /// once an insert is durable.
    fn claim(&self, record: &Record) -> Result<Claim, StoreError>;
}

/// Decides a claim against the existing entries of both directions.
fn decide(by_name: Option<&Record>, by_addr: Option<&str>, record: &Record) -> Option<Claim> {
    if let Some(existing) = by_name {
        return Some(if existing.addr == record.addr {
            Claim::AlreadyYours
        } else {
            Claim::NameTaken
        });
    }
    by_addr.map(|name| Claim::AddrHasName(name.to_owned()))
}

/// An in-memory store for unit tests and ephemeral runs. Lost on exit.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    names: HashMap<String, Record>,
    addrs: HashMap<[u8; 20], String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl NameStore for MemoryStore {
    fn get_by_name(&self, name: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.inner.read().names.get(name).cloned())
    }

    fn get_by_addr(&self, addr: &JamiId) -> Result<Option<String>, StoreError> {
        Ok(self.inner.read().addrs.get(addr.as_bytes()).cloned())
    }

    fn claim(&self, record: &Record) -> Result<Claim, StoreError> {
        let mut inner = self.inner.write();
        let by_name = inner.names.get(&record.name);
        let by_addr = inner.addrs.get(&record.addr).map(String::as_str);
        if let Some(c) = decide(by_name, by_addr, record) {
            return Ok(c);
        }
        inner.addrs.insert(record.addr, record.name.clone());
        inner.names.insert(record.name.clone(), record.clone());
        Ok(Claim::Inserted)
    }
}

const NAMES: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("names");
const ADDRS: redb::TableDefinition<'_, &[u8; 20], &str> = redb::TableDefinition::new("addrs");

/// The default store: a redb database file `names.redb` in the data directory. Every claim is
/// one write transaction committed with immediate durability (fsync) before it returns.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    /// File name inside the data directory.
    pub const FILE_NAME: &'static str = "names.redb";

    /// Opens (or creates) the database in `data_dir`, creating the directory if needed.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|_| StoreError::Open)?;
        let db =
            redb::Database::create(data_dir.join(Self::FILE_NAME)).map_err(|_| StoreError::Open)?;
        // Create both tables up front so reads never see a missing table.
        let tx = db.begin_write().map_err(|_| StoreError::Open)?;
        tx.open_table(NAMES).map_err(|_| StoreError::Open)?;
        tx.open_table(ADDRS).map_err(|_| StoreError::Open)?;
        tx.commit().map_err(|_| StoreError::Open)?;
        Ok(Self { db })
    }
}

fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt)
}

impl NameStore for RedbStore {
    fn get_by_name(&self, name: &str) -> Result<Option<Record>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().map_err(|_| StoreError::Read)?;
        let table = tx.open_table(NAMES).map_err(|_| StoreError::Read)?;
        match table.get(name).map_err(|_| StoreError::Read)? {
            Some(v) => decode_record(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn get_by_addr(&self, addr: &JamiId) -> Result<Option<String>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().map_err(|_| StoreError::Read)?;
        let table = tx.open_table(ADDRS).map_err(|_| StoreError::Read)?;
        Ok(table
            .get(addr.as_bytes())
            .map_err(|_| StoreError::Read)?
            .map(|v| v.value().to_owned()))
    }

    fn claim(&self, record: &Record) -> Result<Claim, StoreError> {
        use redb::ReadableTable;
        let value = serde_json::to_vec(record).map_err(|_| StoreError::Write)?;
        let tx = self.db.begin_write().map_err(|_| StoreError::Write)?;
        {
            let mut names = tx.open_table(NAMES).map_err(|_| StoreError::Write)?;
            let mut addrs = tx.open_table(ADDRS).map_err(|_| StoreError::Write)?;
            let by_name = match names
                .get(record.name.as_str())
                .map_err(|_| StoreError::Read)?
            {
                Some(v) => Some(decode_record(v.value())?),
                None => None,
            };
            let by_addr = addrs
                .get(&record.addr)
                .map_err(|_| StoreError::Read)?
                .map(|v| v.value().to_owned());
            if let Some(c) = decide(by_name.as_ref(), by_addr.as_deref(), record) {
                // Read-only outcome: dropping the transaction aborts it.
                return Ok(c);
            }
            names
                .insert(record.name.as_str(), value.as_slice())
                .map_err(|_| StoreError::Write)?;
            addrs
                .insert(&record.addr, record.name.as_str())
                .map_err(|_| StoreError::Write)?;
        }
        // Durability::Immediate is redb's default: commit returns after the data is synced.
        tx.commit().map_err(|_| StoreError::Write)?;
        Ok(Claim::Inserted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, addr: u8) -> Record {
        Record {
            name: name.into(),
            addr: [addr; 20],
            owner: [9; 20],
            publickey: "pk".into(),
            signature: "sig".into(),
        }
    }

    fn contract(store: &dyn NameStore) {
        assert_eq!(store.get_by_name("alice").unwrap(), None);
        assert_eq!(store.claim(&rec("alice", 1)).unwrap(), Claim::Inserted);
        assert_eq!(store.claim(&rec("alice", 1)).unwrap(), Claim::AlreadyYours);
        assert_eq!(store.claim(&rec("alice", 2)).unwrap(), Claim::NameTaken);
        assert_eq!(
            store.claim(&rec("alice2", 1)).unwrap(),
            Claim::AddrHasName("alice".into())
        );
        assert_eq!(store.get_by_name("alice").unwrap(), Some(rec("alice", 1)));
        assert_eq!(
            store.get_by_addr(&JamiId::new([1; 20])).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(store.get_by_addr(&JamiId::new([2; 20])).unwrap(), None);
        assert_eq!(
            store.get_by_name("alice2").unwrap(),
            None,
            "a refused claim wrote nothing"
        );
        assert_eq!(store.claim(&rec("bob", 2)).unwrap(), Claim::Inserted);
    }

    #[test]
    fn memory_store_contract() {
        contract(&MemoryStore::new());
    }

    #[test]
    fn redb_store_contract_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            contract(&store);
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.get_by_name("alice").unwrap(), Some(rec("alice", 1)));
        assert_eq!(
            store.get_by_addr(&JamiId::new([2; 20])).unwrap().as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn record_debug_is_redacted() {
        assert_eq!(format!("{:?}", rec("alice", 1)), "Record(<redacted>)");
    }
}
