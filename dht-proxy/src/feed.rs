//! Shared DHT listens: one DHT listen per key, whatever the number of HTTP listen streams and
//! push subscribers on it. Values are verified and rendered to JSON lines once, then fanned out to every
//! stream through a broadcast channel; a new stream starts from the key's current values.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::backend::DhtBackend;
use crate::value::{Key, Value};

/// Events buffered per key before a slow stream has to resynchronise.
const FEED_CAPACITY: usize = 256;

/// One value, rendered.
#[derive(Clone)]
pub struct FeedItem {
    /// Value id.
    pub id: u64,
    /// JSON line of the value.
    pub line: Bytes,
    /// JSON line of its expiry (`"expired":true`).
    pub expired_line: Bytes,
    /// The value itself (push payloads need its id, priority and push type).
    pub value: Arc<Value>,
}

/// One DHT listen callback, rendered.
pub struct FeedEvent {
    /// Values concerned.
    pub items: Vec<FeedItem>,
    /// Whether they expired.
    pub expired: bool,
}

struct Feed {
    generation: u64,
    tx: broadcast::Sender<Arc<FeedEvent>>,
    current: HashMap<u64, FeedItem>,
    streams: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Feeds {
    by_key: HashMap<Key, Feed>,
    next_gen: u64,
}

/// The per-key feeds.
#[derive(Default)]
pub struct Hub {
    feeds: Mutex<Feeds>,
}

/// Held by a stream or a key's push subscribers: the feed is dropped (and its DHT listen
/// cancelled) with its last holder.
pub struct FeedGuard {
    hub: Weak<Hub>,
    key: Key,
    generation: u64,
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut f = hub.feeds.lock();
        let remove = match f.by_key.get_mut(&self.key) {
            Some(feed) if feed.generation == self.generation => {
                feed.streams -= 1;
                feed.streams == 0
            }
            _ => false,
        };
        if remove {
            f.by_key.remove(&self.key);
        }
    }
}

/// A stream's view of a feed.
pub struct Subscription {
    /// The key's current values.
    pub snapshot: Vec<FeedItem>,
    /// Later events.
    pub rx: broadcast::Receiver<Arc<FeedEvent>>,
    /// Keeps the feed alive.
    pub guard: FeedGuard,
}

fn render(v: &Value) -> FeedItem {
    FeedItem {
        id: v.id,
        line: Bytes::from(v.to_json_line(false)),
        expired_line: Bytes::from(v.to_json_line(true)),
        value: Arc::new(v.clone()),
    }
}

impl Hub {
    /// Number of keys with a running feed.
    pub fn len(&self) -> usize {
        self.feeds.lock().by_key.len()
    }

    /// Whether no feed runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes to `key`, starting its DHT listen if this is the first holder.
    pub fn subscribe(self: &Arc<Self>, key: Key, backend: &Arc<dyn DhtBackend>) -> Subscription {
        let mut f = self.feeds.lock();
        let Feeds { by_key, next_gen } = &mut *f;
        let feed = by_key.entry(key).or_insert_with(|| {
            *next_gen += 1;
            let generation = *next_gen;
            let (tx, _) = broadcast::channel(FEED_CAPACITY);
            let task = tokio::spawn(run_feed(
                Arc::downgrade(self),
                key,
                generation,
                backend.clone(),
            ));
            Feed {
                generation,
                tx,
                current: HashMap::new(),
                streams: 0,
                task,
            }
        });
        feed.streams += 1;
        Subscription {
            snapshot: feed.current.values().cloned().collect(),
            rx: feed.tx.subscribe(),
            guard: FeedGuard {
                hub: Arc::downgrade(self),
                key,
                generation: feed.generation,
            },
        }
    }

    /// The current values of a key's feed (to resynchronise a stream that fell behind).
    pub fn snapshot(&self, key: &Key, generation: u64) -> Option<Vec<FeedItem>> {
        let f = self.feeds.lock();
        f.by_key
            .get(key)
            .filter(|feed| feed.generation == generation)
            .map(|feed| feed.current.values().cloned().collect())
    }
}

impl FeedGuard {
    /// The feed generation this guard belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

async fn run_feed(hub: Weak<Hub>, key: Key, generation: u64, backend: Arc<dyn DhtBackend>) {
    let Some(mut listen) = backend.listen(key).await else {
        return;
    };
    while let Some(ev) = listen.events.recv().await {
        // Signature checks and JSON rendering happen once per value, not once per stream.
        let items: Vec<FeedItem> = ev
            .values
            .iter()
            .filter(|v| v.is_acceptable())
            .map(render)
            .collect();
        if items.is_empty() {
            continue;
        }
        let Some(hub) = hub.upgrade() else { return };
        let mut f = hub.feeds.lock();
        let Some(feed) = f
            .by_key
            .get_mut(&key)
            .filter(|feed| feed.generation == generation)
        else {
            return;
        };
        for it in &items {
            if ev.expired {
                feed.current.remove(&it.id);
            } else {
                feed.current.insert(it.id, it.clone());
            }
        }
        let _ = feed.tx.send(Arc::new(FeedEvent {
            items,
            expired: ev.expired,
        }));
    }
}

/// A listen stream's position in its key's feed: which values it has sent.
pub struct Cursor {
    hub: Arc<Hub>,
    key: Key,
    rx: broadcast::Receiver<Arc<FeedEvent>>,
    sent: HashMap<u64, FeedItem>,
    guard: FeedGuard,
}

impl Cursor {
    /// Subscribes to `key` and returns the cursor and the lines of the current values.
    pub fn open(hub: &Arc<Hub>, key: Key, backend: &Arc<dyn DhtBackend>) -> (Self, Vec<Bytes>) {
        let sub = hub.subscribe(key, backend);
        let mut c = Self {
            hub: hub.clone(),
            key,
            rx: sub.rx,
            sent: HashMap::new(),
            guard: sub.guard,
        };
        let mut out = Vec::new();
        for it in &sub.snapshot {
            c.offer(it, &mut out);
        }
        (c, out)
    }

    fn offer(&mut self, it: &FeedItem, out: &mut Vec<Bytes>) {
        if self.sent.get(&it.id).is_none_or(|old| old.line != it.line) {
            out.push(it.line.clone());
            self.sent.insert(it.id, it.clone());
        }
    }

    fn expire(&mut self, id: u64, out: &mut Vec<Bytes>) {
        if let Some(old) = self.sent.remove(&id) {
            out.push(old.expired_line);
        }
    }

    /// The next lines to send (one value each), or `None` when the feed is gone.
    pub async fn next(&mut self) -> Option<Vec<Bytes>> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let mut out = Vec::new();
            match self.rx.recv().await {
                Ok(ev) => {
                    for it in &ev.items {
                        if ev.expired {
                            self.expire(it.id, &mut out);
                        } else {
                            self.offer(it, &mut out);
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Fell behind: resynchronise from the key's current values.
                    let snap = self
                        .hub
                        .snapshot(&self.key, self.guard.generation())
                        .unwrap_or_default();
                    let live: std::collections::HashSet<u64> = snap.iter().map(|i| i.id).collect();
                    let gone: Vec<u64> = self
                        .sent
                        .keys()
                        .copied()
                        .filter(|id| !live.contains(id))
                        .collect();
                    for id in gone {
                        self.expire(id, &mut out);
                    }
                    for it in &snap {
                        self.offer(it, &mut out);
                    }
                }
                Err(RecvError::Closed) => return None,
            }
            if !out.is_empty() {
                return Some(out);
            }
        }
    }
}
