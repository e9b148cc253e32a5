//! What the proxy needs from a DHT node, and an in-memory implementation for tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, StreamExt as _};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::value::{Key, Value};

/// One callback of a DHT listen: values that appeared (or changed), or that expired.
#[derive(Clone, Debug)]
pub struct ListenEvent {
    /// The values concerned.
    pub values: Vec<Value>,
    /// Whether these values expired.
    pub expired: bool,
}

/// A running DHT listen. Dropping it cancels the listen on the node.
pub struct Listen {
    /// Events, current values first.
    pub events: mpsc::UnboundedReceiver<ListenEvent>,
    /// Held for its `Drop`, which cancels the DHT listen.
    pub guard: Box<dyn Send + Sync>,
}

/// Routing-table counters of one address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyStatus {
    /// Good nodes.
    pub good: u64,
    /// Dubious nodes.
    pub dubious: u64,
    /// Incoming nodes.
    pub incoming: u64,
    /// Routing table depth (reported only when > 1).
    pub table_depth: u32,
}

/// The node's state as shown by `GET /`.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    /// The node id.
    pub node_id: Key,
    /// IPv4 routing table.
    pub ipv4: FamilyStatus,
    /// IPv6 routing table.
    pub ipv6: FamilyStatus,
    /// Ongoing operations.
    pub ops: u64,
}

/// The DHT operations the proxy uses.
pub trait DhtBackend: Send + Sync + 'static {
    /// A one-shot get: batches of values until the search completes.
    fn get(&self, key: Key) -> BoxStream<'static, Vec<Value>>;
    /// Puts a value; resolves when the put completed, `true` if at least one node stored it.
    /// A permanent put is kept announced (and refreshed) until [`Self::cancel_put`].
    fn put(&self, key: Key, value: Value, permanent: bool) -> BoxFuture<'static, bool>;
    /// Stops announcing a permanent put.
    fn cancel_put(&self, key: Key, id: u64);
    /// Starts a listen.
    fn listen(&self, key: Key) -> BoxFuture<'static, Option<Listen>>;
    /// The node's current state.
    fn status(&self) -> NodeStatus;
}

type Listeners = HashMap<Key, Vec<(u64, mpsc::UnboundedSender<ListenEvent>)>>;

#[derive(Default)]
struct MemState {
    values: HashMap<Key, Vec<Value>>,
    listeners: Listeners,
    permanent: HashMap<(Key, u64), ()>,
}

/// An in-memory DHT of one node, for tests. Puts succeed unless told otherwise.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<MemState>>,
    next_listener: Arc<AtomicU64>,
    fail_puts: Arc<AtomicBool>,
    puts: Arc<AtomicU64>,
}

impl MemoryBackend {
    /// An empty DHT.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later put fail (`true`) or succeed.
    pub fn set_fail_puts(&self, fail: bool) {
        self.fail_puts.store(fail, Ordering::SeqCst);
    }

    /// Number of puts received (including refreshes of permanent puts).
    pub fn put_count(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// Number of listens currently open.
    pub fn listener_count(&self) -> usize {
        let st = self.state.lock();
        st.listeners
            .values()
            .map(|v| v.iter().filter(|(_, tx)| !tx.is_closed()).count())
            .sum()
    }

    /// Whether `(key, id)` is currently a permanent put.
    pub fn is_permanent(&self, key: &Key, id: u64) -> bool {
        self.state.lock().permanent.contains_key(&(*key, id))
    }

    /// Stored values at `key`.
    pub fn values(&self, key: &Key) -> Vec<Value> {
        self.state
            .lock()
            .values
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// Stores a value as if another node had put it, notifying listeners.
    pub fn inject(&self, key: Key, value: Value) {
        self.store(key, value);
    }

    /// Expires a value, notifying listeners.
    pub fn expire(&self, key: &Key, id: u64) {
        let mut st = self.state.lock();
        let Some(vals) = st.values.get_mut(key) else {
            return;
        };
        let Some(pos) = vals.iter().position(|v| v.id == id) else {
            return;
        };
        let v = vals.remove(pos);
        notify(
            &mut st.listeners,
            key,
            &ListenEvent {
                values: vec![v],
                expired: true,
            },
        );
    }

    fn store(&self, key: Key, value: Value) {
        let mut st = self.state.lock();
        let vals = st.values.entry(key).or_default();
        if let Some(old) = vals.iter_mut().find(|v| v.id == value.id) {
            if *old == value {
                return; // a refresh: listeners are not told
            }
            *old = value.clone();
        } else {
            vals.push(value.clone());
        }
        notify(
            &mut st.listeners,
            &key,
            &ListenEvent {
                values: vec![value],
                expired: false,
            },
        );
    }
}

fn notify(listeners: &mut Listeners, key: &Key, ev: &ListenEvent) {
    if let Some(ls) = listeners.get_mut(key) {
        ls.retain(|(_, tx)| tx.send(ev.clone()).is_ok());
    }
}

struct MemListenGuard {
    state: Arc<Mutex<MemState>>,
    key: Key,
    id: u64,
}

impl Drop for MemListenGuard {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if let Some(ls) = st.listeners.get_mut(&self.key) {
            ls.retain(|(i, _)| *i != self.id);
            if ls.is_empty() {
                st.listeners.remove(&self.key);
            }
        }
    }
}

impl DhtBackend for MemoryBackend {
    fn get(&self, key: Key) -> BoxStream<'static, Vec<Value>> {
        let vals = self.values(&key);
        futures_util::stream::iter(if vals.is_empty() { vec![] } else { vec![vals] }).boxed()
    }

    fn put(&self, key: Key, value: Value, permanent: bool) -> BoxFuture<'static, bool> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        if self.fail_puts.load(Ordering::SeqCst) {
            return async { false }.boxed();
        }
        if permanent {
            self.state.lock().permanent.insert((key, value.id), ());
        }
        self.store(key, value);
        async { true }.boxed()
    }

    fn cancel_put(&self, key: Key, id: u64) {
        self.state.lock().permanent.remove(&(key, id));
    }

    fn listen(&self, key: Key) -> BoxFuture<'static, Option<Listen>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_listener.fetch_add(1, Ordering::SeqCst);
        {
            let mut st = self.state.lock();
            let current = st.values.get(&key).cloned().unwrap_or_default();
            if !current.is_empty() {
                let _ = tx.send(ListenEvent {
                    values: current,
                    expired: false,
                });
            }
            st.listeners.entry(key).or_default().push((id, tx));
        }
        let guard = MemListenGuard {
            state: self.state.clone(),
            key,
            id,
        };
        async move {
            Some(Listen {
                events: rx,
                guard: Box::new(guard),
            })
        }
        .boxed()
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            node_id: [0x70; 20],
            ipv4: FamilyStatus {
                good: 1,
                ..FamilyStatus::default()
            },
            ipv6: FamilyStatus::default(),
            ops: 0,
        }
    }
}
