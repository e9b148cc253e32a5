//! Value storage with OpenDHT's value types, store/edit policies and limits (A.12).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmpv::Value as Mp;

use super::infohash::InfoHash;
use super::value::{MAX_VALUE_SIZE, Query, Value, blob, get};

/// Default per-key value cap (`Storage::MAX_VALUES`).
pub const DEFAULT_MAX_VALUES_PER_KEY: usize = 65_536;
/// Default total storage (64 MiB).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// A listener not refreshed for this long is dropped.
pub const LISTENER_EXPIRE: Duration = Duration::from_secs(600);
/// Certificate value type.
pub const CERTIFICATE_TYPE: u16 = 8;

/// Lifetime of a value type (unknown types get type 0's).
pub fn type_expiration(vtype: u16) -> Duration {
    match vtype {
        1 | 3 => Duration::from_secs(5 * 60),
        2 => Duration::from_secs(15 * 60),
        4 | 8 => Duration::from_secs(7 * 24 * 3600),
        5 => Duration::from_secs(60),
        _ => Duration::from_secs(10 * 60),
    }
}

/// The type whose rules apply to a value as stored (encrypted values use type 0).
pub fn effective_type(v: &Value) -> u16 {
    if v.is_encrypted() { 0 } else { v.vtype }
}

/// Storage limits.
#[derive(Debug, Clone, Copy)]
pub struct StorageLimits {
    /// Values per key.
    pub max_values_per_key: usize,
    /// Total bytes (sum of [`Value::size`]).
    pub max_bytes: usize,
}

impl Default for StorageLimits {
    fn default() -> Self {
        Self {
            max_values_per_key: DEFAULT_MAX_VALUES_PER_KEY,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// A stored value.
#[derive(Clone)]
pub struct Stored {
    /// The value.
    pub value: Arc<Value>,
    /// Creation time, unix seconds.
    pub created: u64,
    /// When it expires.
    pub expiration: Instant,
    source: Option<IpAddr>,
    size: usize,
}

/// A remote listener registered on a key.
#[derive(Clone)]
pub struct Listener {
    /// Listener node id.
    pub node_id: InfoHash,
    /// Filter.
    pub query: Query,
    /// Last refresh.
    pub refreshed: Instant,
}

#[derive(Default)]
struct KeyStorage {
    values: Vec<Stored>,
    listeners: HashMap<(SocketAddr, u32), Listener>,
}

/// Result of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// New value stored.
    New,
    /// An existing value was replaced (edit policy allowed it).
    Edited,
    /// Identical value: its expiration was extended.
    Refreshed,
    /// Refused by a policy or limit.
    Rejected(Reject),
}

/// Why a value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Bigger than 64 KiB.
    TooBig,
    /// Signature does not verify.
    BadSignature,
    /// Type-specific store rule failed.
    Policy,
    /// Edit not allowed (unsigned, other owner, seq not greater).
    Edit,
    /// Already expired.
    Expired,
    /// Per-key cap reached.
    KeyFull,
    /// Total storage full.
    Full,
    /// Value id 0.
    InvalidId,
}

/// Result of a refresh request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// No storage at all for the key (error 404).
    NoStorage,
    /// Storage exists; `true` if the value was found and refreshed.
    Done(bool),
}

/// Values removed by expiry or eviction, per key.
pub type Removed = Vec<(InfoHash, Vec<Arc<Value>>)>;

/// The store.
pub struct Storage {
    keys: HashMap<InfoHash, KeyStorage>,
    limits: StorageLimits,
    total_bytes: usize,
    total_values: usize,
    per_source: HashMap<Option<IpAddr>, usize>,
    next_expiry: Option<Instant>,
    next_listener_sweep: Option<Instant>,
}

impl Storage {
    /// Empty storage with `limits`.
    pub fn new(limits: StorageLimits) -> Self {
        Self {
            keys: HashMap::new(),
            limits,
            total_bytes: 0,
            total_values: 0,
            per_source: HashMap::new(),
            next_expiry: None,
            next_listener_sweep: None,
        }
    }

    /// Number of stored values.
    pub fn value_count(&self) -> usize {
        self.total_values
    }

    /// Bytes used.
    pub fn bytes(&self) -> usize {
        self.total_bytes
    }

    /// Number of keys with storage.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of remote listeners.
    pub fn listener_count(&self) -> usize {
        self.keys.values().map(|k| k.listeners.len()).sum()
    }

    /// Values stored at `key` that match `query`'s filters.
    pub fn get(&self, key: &InfoHash, query: &Query) -> Vec<Arc<Value>> {
        self.keys
            .get(key)
            .map(|k| {
                k.values
                    .iter()
                    .filter(|s| query.matches(&s.value))
                    .map(|s| s.value.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stored entries at `key`.
    pub fn entries(&self, key: &InfoHash) -> &[Stored] {
        self.keys
            .get(key)
            .map(|k| k.values.as_slice())
            .unwrap_or(&[])
    }

    /// Stores `value` under `key` (A.12). Returns the outcome and any values evicted to make room.
    pub fn store(
        &mut self,
        key: &InfoHash,
        value: Value,
        created: u64,
        now: Instant,
        now_unix: u64,
        source: Option<IpAddr>,
    ) -> (StoreOutcome, Removed) {
        if value.id == 0 {
            return (StoreOutcome::Rejected(Reject::InvalidId), vec![]);
        }
        let created = created.min(now_unix);
        let life = type_expiration(effective_type(&value));
        let age = Duration::from_secs(now_unix - created);
        if age >= life {
            return (StoreOutcome::Rejected(Reject::Expired), vec![]);
        }
        let expiration = now + (life - age);
        let ks = self.keys.entry(*key).or_default();
        if let Some(pos) = ks.values.iter().position(|s| s.value.id == value.id) {
            let old = &mut ks.values[pos];
            if old.value.same_content(&value) {
                old.expiration = old.expiration.max(expiration);
                old.created = old.created.max(created);
                return (StoreOutcome::Refreshed, vec![]);
            }
            if let Err(r) = check_store(key, &value).and_then(|()| check_edit(&old.value, &value)) {
                return (StoreOutcome::Rejected(r), vec![]);
            }
            let size = value.size();
            let old_size = old.size;
            let old_source = old.source;
            *old = Stored {
                value: Arc::new(value),
                created,
                expiration,
                source,
                size,
            };
            self.total_bytes = self.total_bytes + size - old_size;
            sub(&mut self.per_source, old_source, old_size);
            *self.per_source.entry(source).or_default() += size;
            self.next_expiry = Some(self.next_expiry.map_or(expiration, |n| n.min(expiration)));
            let evicted = self.enforce_limit();
            return (StoreOutcome::Edited, evicted);
        }
        if let Err(r) = check_store(key, &value) {
            if ks.values.is_empty() && ks.listeners.is_empty() {
                self.keys.remove(key);
            }
            return (StoreOutcome::Rejected(r), vec![]);
        }
        if ks.values.len() >= self.limits.max_values_per_key {
            return (StoreOutcome::Rejected(Reject::KeyFull), vec![]);
        }
        let size = value.size();
        if size > self.limits.max_bytes {
            if ks.values.is_empty() && ks.listeners.is_empty() {
                self.keys.remove(key);
            }
            return (StoreOutcome::Rejected(Reject::Full), vec![]);
        }
        if ks.values.capacity() == 0 {
            // Most keys hold one value: do not let the first push reserve four.
            ks.values.reserve_exact(1);
        }
        ks.values.push(Stored {
            value: Arc::new(value),
            created,
            expiration,
            source,
            size,
        });
        self.total_bytes += size;
        self.total_values += 1;
        *self.per_source.entry(source).or_default() += size;
        self.next_expiry = Some(self.next_expiry.map_or(expiration, |n| n.min(expiration)));
        let evicted = self.enforce_limit();
        (StoreOutcome::New, evicted)
    }

    fn enforce_limit(&mut self) -> Removed {
        let mut out: Removed = Vec::new();
        while self.total_bytes > self.limits.max_bytes {
            // The source using the most storage loses its oldest-expiring value.
            let Some((&src, _)) = self.per_source.iter().max_by_key(|(_, b)| **b) else {
                break;
            };
            let mut best: Option<(InfoHash, usize, Instant)> = None;
            for (k, ks) in &self.keys {
                for (i, s) in ks.values.iter().enumerate() {
                    if s.source == src && best.is_none_or(|b| s.expiration < b.2) {
                        best = Some((*k, i, s.expiration));
                    }
                }
            }
            let Some((k, i, _)) = best else {
                self.per_source.remove(&src);
                continue;
            };
            if let Some(v) = self.remove_at(&k, i) {
                push_removed(&mut out, k, v);
            }
        }
        out
    }

    fn remove_at(&mut self, key: &InfoHash, i: usize) -> Option<Arc<Value>> {
        let ks = self.keys.get_mut(key)?;
        let s = ks.values.swap_remove(i);
        self.total_bytes -= s.size;
        self.total_values -= 1;
        sub(&mut self.per_source, s.source, s.size);
        if ks.values.is_empty() && ks.listeners.is_empty() {
            self.keys.remove(key);
        }
        Some(s.value)
    }

    /// Refreshes value `vid` at `key` (A.6 refresh).
    pub fn refresh(&mut self, key: &InfoHash, vid: u64, now: Instant) -> RefreshOutcome {
        let Some(ks) = self.keys.get_mut(key) else {
            return RefreshOutcome::NoStorage;
        };
        if ks.values.is_empty() {
            return RefreshOutcome::NoStorage;
        }
        match ks.values.iter_mut().find(|s| s.value.id == vid) {
            Some(s) => {
                let e = now + type_expiration(effective_type(&s.value));
                s.expiration = s.expiration.max(e);
                RefreshOutcome::Done(true)
            }
            None => RefreshOutcome::Done(false),
        }
    }

    /// Removes expired values and stale listeners. Returns the removed values per key.
    pub fn expire(&mut self, now: Instant) -> Removed {
        let mut out: Removed = Vec::new();
        if self.next_expiry.is_some_and(|n| n <= now) {
            let mut next: Option<Instant> = None;
            let mut freed = Vec::new();
            for (k, ks) in &mut self.keys {
                let mut gone = Vec::new();
                ks.values.retain(|s| {
                    if s.expiration <= now {
                        freed.push((s.source, s.size));
                        gone.push(s.value.clone());
                        false
                    } else {
                        next = Some(next.map_or(s.expiration, |n| n.min(s.expiration)));
                        true
                    }
                });
                if !gone.is_empty() {
                    out.push((*k, gone));
                }
            }
            for (src, size) in freed {
                self.total_bytes -= size;
                self.total_values -= 1;
                sub(&mut self.per_source, src, size);
            }
            self.next_expiry = next;
        }
        // Listener sweep every 30 s (the reference sweeps every 2–6 min).
        if self.next_listener_sweep.is_none_or(|t| t <= now) {
            self.next_listener_sweep = Some(now + Duration::from_secs(30));
            for ks in self.keys.values_mut() {
                ks.listeners
                    .retain(|_, l| now.saturating_duration_since(l.refreshed) < LISTENER_EXPIRE);
            }
            self.keys
                .retain(|_, ks| !ks.values.is_empty() || !ks.listeners.is_empty());
        }
        out
    }

    /// Adds or refreshes a listener. Returns `true` if it is new.
    pub fn add_listener(
        &mut self,
        key: &InfoHash,
        addr: SocketAddr,
        sid: u32,
        node_id: InfoHash,
        query: Query,
        now: Instant,
    ) -> bool {
        let ks = self.keys.entry(*key).or_default();
        match ks.listeners.get_mut(&(addr, sid)) {
            Some(l) => {
                l.refreshed = now;
                l.query = query;
                l.node_id = node_id;
                false
            }
            None => {
                ks.listeners.insert(
                    (addr, sid),
                    Listener {
                        node_id,
                        query,
                        refreshed: now,
                    },
                );
                true
            }
        }
    }

    /// Listeners on `key`.
    pub fn listeners(&self, key: &InfoHash) -> Vec<(SocketAddr, u32, Listener)> {
        self.keys
            .get(key)
            .map(|k| {
                k.listeners
                    .iter()
                    .map(|((a, s), l)| (*a, *s, l.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn push_removed(out: &mut Removed, k: InfoHash, v: Arc<Value>) {
    match out.iter_mut().find(|(kk, _)| *kk == k) {
        Some((_, vs)) => vs.push(v),
        None => out.push((k, vec![v])),
    }
}

fn sub(m: &mut HashMap<Option<IpAddr>, usize>, k: Option<IpAddr>, n: usize) {
    if let Some(x) = m.get_mut(&k) {
        *x = x.saturating_sub(n);
        if *x == 0 {
            m.remove(&k);
        }
    }
}

/// IP service announcement value type.
pub const IP_SERVICE_TYPE: u16 = 2;

/// Linux `sa_family_t` values as they appear (little-endian) in a raw sockaddr.
const SA_AF_INET: u16 = 2;
const SA_AF_INET6: u16 = 10;

/// The port of a type-2 value's data: a msgpack bin holding a raw Linux sockaddr (family
/// little-endian, port big-endian at bytes 2..4). `None` if the data is not such a bin, the
/// family is neither AF_INET nor AF_INET6, or the port is 0 (observed on dhtnode 2.4.12:
/// such values are not stored).
pub fn ip_service_port(data: &[u8]) -> Option<u16> {
    let mut rd = data;
    let Ok(Mp::Binary(sa)) = rmpv::decode::read_value_with_max_depth(&mut rd, 2) else {
        return None;
    };
    let family = u16::from_le_bytes([*sa.first()?, *sa.get(1)?]);
    let port = u16::from_be_bytes([*sa.get(2)?, *sa.get(3)?]);
    ((family == SA_AF_INET || family == SA_AF_INET6) && port != 0).then_some(port)
}

/// What a storing node keeps of an IP service announcement (type 2) received from `sender`:
/// a new value with the same id whose data is the sender's address (sockaddr of the sender's
/// family, flow info and scope 0) with the announced port; every other field is dropped
/// (observed on dhtnode 2.4.12: `utype` is gone, an IPv6 announcement from an IPv4 sender
/// becomes an IPv4 sockaddr). `None` if the announcement is invalid (refused).
pub fn ip_service_rewrite(v: &Value, sender: IpAddr) -> Option<Value> {
    let port = ip_service_port(&v.data)?;
    let mut sa = Vec::with_capacity(28);
    match sender {
        IpAddr::V4(a) => {
            sa.extend(SA_AF_INET.to_le_bytes());
            sa.extend(port.to_be_bytes());
            sa.extend(a.octets());
            sa.extend([0u8; 8]);
        }
        IpAddr::V6(a) => {
            sa.extend(SA_AF_INET6.to_le_bytes());
            sa.extend(port.to_be_bytes());
            sa.extend([0u8; 4]); // flow info
            sa.extend(a.octets());
            sa.extend([0u8; 4]); // scope id
        }
    }
    let mut data = Vec::with_capacity(30);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut data, &Mp::Binary(sa));
    let mut out = Value::new(data);
    out.id = v.id;
    out.vtype = IP_SERVICE_TYPE;
    Some(out)
}

/// The store policy of the value's type.
pub fn check_store(key: &InfoHash, v: &Value) -> Result<(), Reject> {
    if v.size() > MAX_VALUE_SIZE {
        return Err(Reject::TooBig);
    }
    if v.is_encrypted() {
        return Ok(());
    }
    if v.is_signed() && !v.verify_signature() {
        return Err(Reject::BadSignature);
    }
    match v.vtype {
        1 => {
            // A DHT message whose data is {service: ""} is refused.
            let mut rd = v.data.as_slice();
            if let Ok(Mp::Map(m)) = rmpv::decode::read_value_with_max_depth(&mut rd, 8) {
                if get(&m, "service")
                    .and_then(blob)
                    .is_some_and(|s| s.is_empty())
                {
                    return Err(Reject::Policy);
                }
            }
            Ok(())
        }
        IP_SERVICE_TYPE => match ip_service_port(&v.data) {
            Some(_) => Ok(()),
            None => Err(Reject::Policy),
        },
        CERTIFICATE_TYPE => match certificate_key_id(&v.data) {
            Some(id) if id == *key => Ok(()),
            _ => Err(Reject::Policy),
        },
        _ => Ok(()),
    }
}

/// The edit policy: may `new` replace `old` (same id, different content)?
pub fn check_edit(old: &Value, new: &Value) -> Result<(), Reject> {
    if old.is_encrypted() || new.is_encrypted() {
        return Err(Reject::Edit);
    }
    match effective_type(old) {
        IP_SERVICE_TYPE => Err(Reject::Edit),
        CERTIFICATE_TYPE => {
            // Same public key: both certificates must carry the same key id.
            match (certificate_key_id(&old.data), certificate_key_id(&new.data)) {
                (Some(a), Some(b)) if a == b => Ok(()),
                _ => Err(Reject::Edit),
            }
        }
        _ => {
            let (Some(oo), Some(no)) = (&old.owner, &new.owner) else {
                return Err(Reject::Edit);
            };
            if oo != no || !new.verify_signature() {
                return Err(Reject::Edit);
            }
            if new.seq > old.seq || (new.seq == old.seq && new.to_sign() == old.to_sign()) {
                Ok(())
            } else {
                Err(Reject::Edit)
            }
        }
    }
}

/// Key id (SHA-1 of the DER SubjectPublicKeyInfo) of the first certificate in a type-8 value's
/// data (a msgpack bin holding a PEM chain, or raw PEM/DER).
pub fn certificate_key_id(data: &[u8]) -> Option<InfoHash> {
    let mut rd = data;
    let raw = match rmpv::decode::read_value_with_max_depth(&mut rd, 4) {
        Ok(v) if rd.is_empty() => blob(&v)?,
        _ => data.to_vec(),
    };
    let der = if raw.starts_with(b"-----") {
        let text = std::str::from_utf8(&raw).ok()?;
        let begin = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
        let end = text[begin..].find("-----END CERTIFICATE-----")? + begin;
        let b64: String = text[begin..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()?
    } else {
        raw
    };
    spki_of_certificate(&der).map(InfoHash::get)
}

/// One DER TLV: (tag, whole TLV, content, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn tlv(b: &[u8]) -> Option<Tlv<'_>> {
    let tag = *b.first()?;
    let l0 = *b.get(1)?;
    let (len, hdr) = if l0 < 0x80 {
        (usize::from(l0), 2)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    Some((tag, &b[..end], &b[hdr..end], &b[end..]))
}

/// The SubjectPublicKeyInfo TLV of an X.509 certificate.
fn spki_of_certificate(der: &[u8]) -> Option<&[u8]> {
    let (t, _, cert, _) = tlv(der)?;
    if t != 0x30 {
        return None;
    }
    let (t, _, tbs, _) = tlv(cert)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (t, _, _, r) = tlv(rest)?;
    if t == 0xa0 {
        rest = r; // explicit version
    }
    // serial, signature algorithm, issuer, validity, subject
    for _ in 0..5 {
        let (_, _, _, r) = tlv(rest)?;
        rest = r;
    }
    let (t, whole, _, _) = tlv(rest)?;
    (t == 0x30).then_some(whole)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests anchor virtual time on the real clock
mod tests {
    use super::*;

    fn val(id: u64, data: &[u8]) -> Value {
        let mut v = Value::new(data.to_vec());
        v.id = id;
        v
    }

    #[test]
    fn store_refresh_edit_and_expire() {
        let mut s = Storage::new(StorageLimits::default());
        let k = InfoHash::get("k");
        let t0 = Instant::now();
        let ip: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            s.store(&k, val(1, b"a"), 1000, t0, 1000, ip).0,
            StoreOutcome::New
        );
        assert_eq!(
            s.store(&k, val(1, b"a"), 1000, t0, 1000, ip).0,
            StoreOutcome::Refreshed
        );
        assert_eq!(
            s.store(&k, val(1, b"b"), 1000, t0, 1000, ip).0,
            StoreOutcome::Rejected(Reject::Edit),
            "unsigned values are never editable"
        );
        assert_eq!(
            s.store(&k, val(0, b"b"), 1000, t0, 1000, ip).0,
            StoreOutcome::Rejected(Reject::InvalidId)
        );
        assert_eq!(
            s.store(&k, val(2, b"old"), 0, t0, 1000, ip).0,
            StoreOutcome::Rejected(Reject::Expired)
        );
        assert_eq!(s.get(&k, &Query::all()).len(), 1);
        assert_eq!(
            s.refresh(&InfoHash::get("nope"), 1, t0),
            RefreshOutcome::NoStorage
        );
        assert_eq!(s.refresh(&k, 99, t0), RefreshOutcome::Done(false));
        let gone = s.expire(t0 + Duration::from_secs(601));
        assert_eq!(gone.len(), 1);
        assert_eq!(s.value_count(), 0);
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn byte_limit_evicts_from_the_heaviest_source() {
        let mut s = Storage::new(StorageLimits {
            max_values_per_key: 10,
            max_bytes: 100,
        });
        let t0 = Instant::now();
        let a: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let b: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        let k = InfoHash::get("k");
        s.store(&k, val(1, &[0; 40]), 10, t0, 10, a);
        s.store(&k, val(2, &[0; 40]), 10, t0, 10, a);
        s.store(&k, val(3, &[0; 10]), 10, t0, 10, b);
        let (o, ev) = s.store(&k, val(4, &[0; 30]), 10, t0 + Duration::from_secs(1), 10, b);
        assert_eq!(o, StoreOutcome::New);
        assert_eq!(
            ev[0].1[0].id, 1,
            "a used most, its oldest-expiring value goes"
        );
        assert!(s.bytes() <= 100);
        for i in 5..20 {
            s.store(&InfoHash::get("k2"), val(i, &[1; 5]), 10, t0, 10, b);
        }
        assert!(s.entries(&InfoHash::get("k2")).len() <= 10);
    }
}
