//! One-shot gets (`GET /key/{h}`) coalesced into shared DHT gets ("rounds").
//!
//! Correctness rule: every request is answered from a DHT get that **started after the request
//! arrived**, so a GET that arrives after a PUT was acknowledged sees that value, exactly as if it
//! had run its own DHT get. Requests never join a round that is already running; they join the
//! key's *pending* round, which starts as soon as a running round of that key finishes (or after
//! [`MAX_WAIT`] at most, so one slow search does not hold the key's later requests back). Under
//! load many requests of one key share one DHT get; an isolated request starts its round at once.
//!
//! A round verifies signatures, suppresses duplicates and renders each value's JSON line once;
//! every request of the round receives the same chunks (one per DHT batch).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, StreamExt as _};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use crate::backend::DhtBackend;
use crate::value::{Key, Value};

/// Longest time a pending round waits for the key's running round before starting anyway.
pub const MAX_WAIT: Duration = Duration::from_millis(20);

/// The chunks a round has produced so far.
#[derive(Default)]
struct RoundState {
    chunks: Vec<Bytes>,
    done: bool,
}

type Round = Arc<watch::Sender<RoundState>>;

#[derive(Default)]
struct KeyGets {
    running: usize,
    pending: Option<Round>,
}

/// The coalescer. Cloning is not needed: hold it in an `Arc`.
pub struct Gets {
    backend: Arc<dyn DhtBackend>,
    keys: Mutex<HashMap<Key, KeyGets>>,
    dht_gets: Counter,
}

impl Gets {
    /// A coalescer over `backend`, counting the DHT gets it starts in `dht_gets`.
    pub fn new(backend: Arc<dyn DhtBackend>, dht_gets: Counter) -> Arc<Self> {
        Arc::new(Self {
            backend,
            keys: Mutex::new(HashMap::new()),
            dht_gets,
        })
    }

    /// DHT gets started so far.
    pub fn dht_gets(&self) -> u64 {
        self.dht_gets.get()
    }

    /// The chunks (one or more JSON lines each) answering a get of `key` that arrives now.
    pub fn get(self: &Arc<Self>, key: Key) -> BoxStream<'static, Bytes> {
        let rx = {
            let mut keys = self.keys.lock();
            let kg = keys.entry(key).or_default();
            if kg.running == 0 {
                kg.running = 1;
                let round: Round = Arc::new(watch::channel(RoundState::default()).0);
                let rx = round.subscribe();
                drop(keys);
                self.launch(key, round);
                rx
            } else if let Some(p) = &kg.pending {
                p.subscribe()
            } else {
                let round: Round = Arc::new(watch::channel(RoundState::default()).0);
                let rx = round.subscribe();
                kg.pending = Some(round.clone());
                drop(keys);
                let me = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(MAX_WAIT).await;
                    if let Some(me) = me.upgrade() {
                        me.start_pending(key, Some(&round));
                    }
                });
                rx
            }
        };
        futures_util::stream::unfold((rx, 0usize), |(mut rx, i)| async move {
            loop {
                let (chunk, done) = {
                    let st = rx.borrow_and_update();
                    (st.chunks.get(i).cloned(), st.done)
                };
                if let Some(c) = chunk {
                    return Some((c, (rx, i + 1)));
                }
                if done {
                    return None;
                }
                // The round's task is gone (runtime shutting down): end the body.
                rx.changed().await.ok()?;
            }
        })
        .boxed()
    }

    /// [`Self::get`], waiting up to `wait` for the round's first chunk (or its end), so that a
    /// quick answer leaves in one write with its head.
    pub async fn get_ready(
        self: &Arc<Self>,
        key: Key,
        wait: Duration,
    ) -> BoxStream<'static, Bytes> {
        let mut s = self.get(key).peekable();
        let _ = tokio::time::timeout(wait, std::pin::Pin::new(&mut s).peek()).await;
        s.boxed()
    }

    /// Starts the key's pending round (if `only` is given: only if it is still that round).
    fn start_pending(self: &Arc<Self>, key: Key, only: Option<&Round>) {
        let mut keys = self.keys.lock();
        let Some(kg) = keys.get_mut(&key) else { return };
        let Some(p) = &kg.pending else { return };
        if only.is_some_and(|r| !Arc::ptr_eq(r, p)) {
            return;
        }
        let Some(round) = kg.pending.take() else {
            return;
        };
        kg.running += 1;
        drop(keys);
        self.launch(key, round);
    }

    fn launch(self: &Arc<Self>, key: Key, round: Round) {
        self.dht_gets.inc();
        let stream = self.backend.get(key);
        let me = self.clone();
        tokio::spawn(async move {
            run_round(stream, &round).await;
            round.send_modify(|s| s.done = true);
            me.finished(key);
        });
    }

    fn finished(self: &Arc<Self>, key: Key) {
        let mut keys = self.keys.lock();
        let Some(kg) = keys.get_mut(&key) else { return };
        kg.running = kg.running.saturating_sub(1);
        if kg.pending.is_some() {
            drop(keys);
            self.start_pending(key, None);
        } else if kg.running == 0 {
            keys.remove(&key);
        }
    }
}

/// Drives one DHT get: one chunk per batch, one JSON line per value, signed values that fail
/// verification dropped, duplicates (same id and content) suppressed.
///
/// A chunk whose DHT get is already complete is published together with the end, so that a
/// request sees both at once and its whole answer goes out in one write.
async fn run_round(mut stream: BoxStream<'static, Vec<Value>>, round: &Round) {
    let mut seen: HashMap<u64, Value> = HashMap::new();
    let mut next = stream.next().await;
    while let Some(batch) = next {
        let mut out = Vec::new();
        for v in batch {
            if seen.get(&v.id) == Some(&v) || !v.is_acceptable() {
                continue;
            }
            out.extend_from_slice(v.to_json_line(false).as_bytes());
            seen.insert(v.id, v);
        }
        // Look ahead without waiting: is the get finished (or the next batch there) already?
        let ahead = stream.next().now_or_never();
        let ended = matches!(ahead, Some(None));
        if !out.is_empty() || ended {
            round.send_modify(|s| {
                if !out.is_empty() {
                    s.chunks.push(Bytes::from(out));
                }
                s.done |= ended;
            });
        }
        next = match ahead {
            Some(n) => n,
            None => stream.next().await,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Listen, MemoryBackend, NodeStatus};
    use futures_util::future::BoxFuture;
    use tokio::sync::Semaphore;

    /// A memory DHT whose gets take their snapshot when called but answer only when the test
    /// releases a permit: a get "in flight" across a put.
    struct GatedGets {
        mem: MemoryBackend,
        gate: Arc<Semaphore>,
    }

    impl DhtBackend for GatedGets {
        fn get(&self, key: Key) -> BoxStream<'static, Vec<Value>> {
            let snapshot = self.mem.values(&key);
            let gate = self.gate.clone();
            futures_util::stream::once(async move {
                gate.acquire().await.map(|p| p.forget()).ok();
                snapshot
            })
            .filter(|b| std::future::ready(!b.is_empty()))
            .boxed()
        }
        fn put(&self, key: Key, value: Value, permanent: bool) -> BoxFuture<'static, bool> {
            self.mem.put(key, value, permanent)
        }
        fn cancel_put(&self, key: Key, id: u64) {
            self.mem.cancel_put(key, id);
        }
        fn listen(&self, key: Key) -> BoxFuture<'static, Option<Listen>> {
            self.mem.listen(key)
        }
        fn status(&self) -> NodeStatus {
            self.mem.status()
        }
    }

    async fn collect(s: BoxStream<'static, Bytes>) -> String {
        let chunks: Vec<Bytes> = s.collect().await;
        chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_get_after_an_acknowledged_put_sees_it_and_concurrent_gets_share_a_round() {
        let gate = Arc::new(Semaphore::new(0));
        let backend = Arc::new(GatedGets {
            mem: MemoryBackend::new(),
            gate: gate.clone(),
        });
        let gets = Gets::new(backend.clone(), Counter::default());
        let key = [7u8; 20];

        // A get is in flight (its DHT get started before the put).
        let early = tokio::spawn(collect(gets.get(key)));
        tokio::task::yield_now().await;
        assert_eq!(gets.dht_gets(), 1);

        // The put is acknowledged.
        let v = Value::plain(42, 0, b"hello".to_vec(), "");
        assert!(backend.put(key, v, false).await);

        // Gets arriving now must not join the running round; they share the next one.
        let late: Vec<_> = (0..5)
            .map(|_| tokio::spawn(collect(gets.get(key))))
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(
            gets.dht_gets(),
            1,
            "the next round waits for the running one"
        );

        gate.add_permits(10);
        assert_eq!(early.await.unwrap(), "", "the early get ran before the put");
        for l in late {
            let body = l.await.unwrap();
            assert!(
                body.contains("\"id\":\"42\""),
                "late get missed the put: {body}"
            );
            assert_eq!(body.lines().count(), 1);
        }
        assert_eq!(
            gets.dht_gets(),
            2,
            "five concurrent gets shared one DHT get"
        );
        // Nothing left behind.
        assert!(gets.keys.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_round_does_not_hold_later_gets_longer_than_max_wait() {
        let gate = Arc::new(Semaphore::new(0));
        let backend = Arc::new(GatedGets {
            mem: MemoryBackend::new(),
            gate: gate.clone(),
        });
        let gets = Gets::new(backend, Counter::default());
        let key = [8u8; 20];
        let _slow = gets.get(key);
        let _next = gets.get(key);
        assert_eq!(gets.dht_gets(), 1);
        tokio::time::sleep(MAX_WAIT + Duration::from_millis(1)).await;
        assert_eq!(
            gets.dht_gets(),
            2,
            "the pending round started after MAX_WAIT"
        );
        // A third get now waits for a new pending round (two are running).
        let _third = gets.get(key);
        assert_eq!(gets.dht_gets(), 2);
        gate.add_permits(10);
    }

    #[tokio::test]
    async fn an_isolated_get_starts_at_once_and_sees_stored_values() {
        let mem = MemoryBackend::new();
        let key = [9u8; 20];
        mem.inject(key, Value::plain(1, 0, b"a".to_vec(), ""));
        let gets = Gets::new(Arc::new(mem), Counter::default());
        let body = collect(gets.get(key)).await;
        assert!(body.contains("\"id\":\"1\""));
        assert_eq!(collect(gets.get([1u8; 20])).await, "");
        assert_eq!(gets.dht_gets(), 2);
    }
}
