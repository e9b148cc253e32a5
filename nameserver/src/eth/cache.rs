//! The bounded lookup cache of the Ethereum store.
//!
//! Registered names never change through the API, so positive answers are kept without expiry;
//! "not registered" answers are kept for a short, configured time only. Every map is bounded:
//! when full, the oldest entry is evicted (FIFO), which keeps memory use fixed whatever the
//! request mix.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::store::Record;

/// A map with at most `cap` entries; inserting into a full map evicts the oldest key.
pub(crate) struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get<Q: Eq + Hash + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.get(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_some() {
            return;
        }
        self.order.push_back(k);
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Removes `k` (linear in the map size; only used on the rare write paths).
    pub(crate) fn remove<Q: Eq + Hash + ?Sized>(&mut self, k: &Q)
    where
        K: Borrow<Q>,
    {
        if self.map.remove(k).is_some() {
            self.order.retain(|o| o.borrow() != k);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// What the cache knows about a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cached<T> {
    /// Registered (kept forever).
    Found(T),
    /// Recently seen as not registered.
    Absent,
    /// Unknown: ask the chain.
    Miss,
}

/// Both directions, positive and negative.
pub(crate) struct LookupCache {
    names: Bounded<String, Record>,
    addrs: Bounded<[u8; 20], String>,
    absent_names: Bounded<String, Instant>,
    absent_addrs: Bounded<[u8; 20], Instant>,
    negative_ttl: Duration,
}

impl LookupCache {
    pub(crate) fn new(cap: usize, negative_ttl: Duration) -> Self {
        Self {
            names: Bounded::new(cap),
            addrs: Bounded::new(cap),
            absent_names: Bounded::new(cap),
            absent_addrs: Bounded::new(cap),
            negative_ttl,
        }
    }

    pub(crate) fn name(&self, name: &str, now: Instant) -> Cached<Record> {
        if let Some(r) = self.names.get(name) {
            return Cached::Found(r.clone());
        }
        match self.absent_names.get(name) {
            Some(until) if *until > now => Cached::Absent,
            _ => Cached::Miss,
        }
    }

    pub(crate) fn addr(&self, addr: &[u8; 20], now: Instant) -> Cached<String> {
        if let Some(n) = self.addrs.get(addr) {
            return Cached::Found(n.clone());
        }
        match self.absent_addrs.get(addr) {
            Some(until) if *until > now => Cached::Absent,
            _ => Cached::Miss,
        }
    }

    /// Remembers a registered record in both directions.
    pub(crate) fn put_record(&mut self, record: &Record) {
        self.absent_names.remove(&record.name);
        self.absent_addrs.remove(&record.addr);
        self.names.insert(record.name.clone(), record.clone());
        self.addrs.insert(record.addr, record.name.clone());
    }

    /// Remembers a reverse mapping.
    pub(crate) fn put_addr(&mut self, addr: [u8; 20], name: String) {
        self.absent_addrs.remove(&addr);
        self.addrs.insert(addr, name);
    }

    /// Drops "not registered" entries the chain has just contradicted.
    pub(crate) fn forget_absent(&mut self, name: &str, addr: &[u8; 20]) {
        self.absent_names.remove(name);
        self.absent_addrs.remove(addr);
    }

    pub(crate) fn put_absent_name(&mut self, name: &str, now: Instant) {
        if !self.negative_ttl.is_zero() {
            self.absent_names
                .insert(name.to_owned(), now + self.negative_ttl);
        }
    }

    pub(crate) fn put_absent_addr(&mut self, addr: [u8; 20], now: Instant) {
        if !self.negative_ttl.is_zero() {
            self.absent_addrs.insert(addr, now + self.negative_ttl);
        }
    }

    /// Entries held (all four maps), for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.names.len() + self.addrs.len() + self.absent_names.len() + self.absent_addrs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, a: u8) -> Record {
        Record {
            name: name.into(),
            addr: [a; 20],
            owner: [7; 20],
            publickey: String::new(),
            signature: String::new(),
        }
    }

    #[test]
    fn bounded_evicts_oldest_and_stays_bounded() {
        let mut b = Bounded::new(3);
        for i in 0..10u8 {
            b.insert(i, i);
            assert!(b.len() <= 3);
        }
        assert_eq!(b.get(&9), Some(&9));
        assert_eq!(b.get(&6), None);
        b.insert(9, 90);
        assert_eq!(b.get(&9), Some(&90));
        assert_eq!(b.len(), 3);
        b.remove(&9);
        assert_eq!(b.len(), 2);
        assert_eq!(b.order.len(), 2);
    }

    #[test]
    fn positive_forever_negative_briefly() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(100, Duration::from_secs(2));
        assert_eq!(c.name("alice", t0), Cached::Miss);
        c.put_absent_name("alice", t0);
        c.put_absent_addr([1; 20], t0);
        assert_eq!(c.name("alice", t0 + Duration::from_secs(1)), Cached::Absent);
        assert_eq!(
            c.addr(&[1; 20], t0 + Duration::from_secs(1)),
            Cached::Absent
        );
        assert_eq!(c.name("alice", t0 + Duration::from_secs(3)), Cached::Miss);
        assert_eq!(c.addr(&[1; 20], t0 + Duration::from_secs(3)), Cached::Miss);
        c.put_absent_name("alice", t0);
        c.put_absent_addr([1; 20], t0);
        c.forget_absent("alice", &[1; 20]);
        assert_eq!(c.name("alice", t0), Cached::Miss);
        assert_eq!(c.addr(&[1; 20], t0), Cached::Miss);
        c.put_absent_name("alice", t0);
        c.put_record(&rec("alice", 1));
        let later = t0 + Duration::from_secs(1_000_000);
        assert_eq!(c.name("alice", later), Cached::Found(rec("alice", 1)));
        assert_eq!(c.addr(&[1; 20], later), Cached::Found("alice".into()));
    }

    #[test]
    fn zero_ttl_caches_no_negative_answer() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(10, Duration::ZERO);
        c.put_absent_name("bob", t0);
        c.put_absent_addr([2; 20], t0);
        assert_eq!(c.name("bob", t0), Cached::Miss);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn cache_is_bounded_under_many_names() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(8, Duration::from_secs(5));
        for i in 0..1000u32 {
            c.put_absent_name(&format!("n{i}"), t0);
            let mut a = [0u8; 20];
            a[..4].copy_from_slice(&i.to_be_bytes());
            c.put_record(&Record {
                name: format!("r{i}"),
                ..rec("x", 0)
            });
            c.put_absent_addr(a, t0);
        }
        assert!(c.len() <= 4 * 8);
    }
}
