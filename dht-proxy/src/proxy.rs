//! The proxy's state: permanent puts, push subscriptions with one shared DHT listen per key,
//! per-IP and global limits, leases and their timers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use waypost_net::shutdown::Shutdown;
use waypost_protocol::redact::PushToken;

use crate::backend::DhtBackend;
use crate::config::ProxyOptions;
use crate::error::ProxyError;
use crate::metrics::{Metrics, Reason};
use crate::push::{self, PushJob, PushPlatform, PushTarget, Pusher, now_ms};
use crate::store::{PushInfo, PutRecord, Store, SubRecord};
use crate::value::{Key, Value};

/// A permanent put kept alive by the proxy.
struct PermPut {
    value: Value,
    expires_ms: u64,
    push: Option<PushInfo>,
    timeout_sent: bool,
}

/// One push subscriber of a key.
struct Sub {
    session_id: String,
    platform: PushPlatform,
    topic: String,
    expires_ms: u64,
    timeout_sent: bool,
    ip: Option<IpAddr>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The subscribers of one key and the DHT listen they share.
struct PushKey {
    subs: HashMap<(String, String), Sub>,
    /// Values currently known on the key (for the first push of a new subscriber).
    current: HashMap<u64, Value>,
    _task: AbortOnDrop,
}

#[derive(Default)]
struct State {
    perms: HashMap<Key, Vec<PermPut>>,
    perm_count: usize,
    push_keys: HashMap<Key, PushKey>,
    sub_count: usize,
    sub_ips: HashMap<IpAddr, usize>,
}

/// Result of a SUBSCRIBE.
pub enum SubscribeOutcome {
    /// A new subscription: answer `{}`.
    New,
    /// An existing subscription was renewed: stream a get (or `{}` with refresh).
    Renewed,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many for this source IP (429).
    PerIp,
    /// Global cap reached (503).
    Global,
}

/// Result of a permanent put.
pub enum PermOutcome {
    /// Stored (or renewed); the value as stored.
    Stored(Value),
    /// The DHT put failed.
    Failed,
    /// Refused by a limit.
    Refused(Refusal),
}

/// Counts open listen streams per IP and in total.
#[derive(Default)]
struct StreamCounter {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// Held by an open listen stream; releases its slot on drop.
pub struct StreamSlot {
    proxy: Weak<Inner>,
    ip: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.upgrade() {
            p.streams.total.fetch_sub(1, Ordering::SeqCst);
            p.metrics.listen_streams.dec();
            let mut m = p.streams.per_ip.lock();
            if let Some(c) = m.get_mut(&self.ip) {
                *c -= 1;
                if *c == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn DhtBackend>,
    pub(crate) opts: ProxyOptions,
    pub(crate) metrics: Metrics,
    pusher: Pusher,
    store: Option<Store>,
    state: Mutex<State>,
    streams: StreamCounter,
    pub(crate) started_s: u64,
    pub(crate) hub: Arc<crate::feed::Hub>,
    pub(crate) gets: Arc<crate::gets::Gets>,
    requests: AtomicU64,
    rate: Mutex<(Instant, u64, f64)>,
}

/// The proxy. Cloning shares it.
#[derive(Clone)]
pub struct Proxy {
    pub(crate) inner: Arc<Inner>,
}

impl Proxy {
    /// Creates the proxy, restores persisted state and starts its timers.
    pub fn new(
        backend: Arc<dyn DhtBackend>,
        opts: ProxyOptions,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) -> Result<Self, ProxyError> {
        let store = match &opts.data_dir {
            Some(d) => Some(Store::open(d)?),
            None => None,
        };
        let pusher = Pusher::start(
            opts.push_server.clone(),
            opts.bundle_id.clone(),
            opts.push_format,
            opts.timers,
            opts.push_queue,
            metrics.clone(),
            shutdown,
        );
        let gets = crate::gets::Gets::new(backend.clone(), metrics.dht_gets.clone());
        let inner = Arc::new(Inner {
            backend,
            gets,
            opts,
            metrics,
            pusher,
            store,
            state: Mutex::new(State::default()),
            streams: StreamCounter::default(),
            started_s: now_ms() / 1000,
            hub: Arc::default(),
            requests: AtomicU64::new(0),
            rate: Mutex::new((Instant::now(), 0, 0.0)),
        });
        let proxy = Self { inner };
        proxy.restore()?;
        let weak = Arc::downgrade(&proxy.inner);
        let sweep = proxy.inner.opts.timers.sweep;
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                Self { inner }.sweep();
            }
        });
        Ok(proxy)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn DhtBackend> {
        &self.inner.backend
    }

    pub(crate) fn count_request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests per second since the previous call (at least 1 s apart).
    pub(crate) fn request_rate(&self) -> f64 {
        let mut r = self.inner.rate.lock();
        let now = Instant::now();
        let total = self.inner.requests.load(Ordering::Relaxed);
        let el = now.duration_since(r.0);
        if el >= Duration::from_secs(1) {
            r.2 = (total - r.1) as f64 / el.as_secs_f64();
            *r = (now, total, r.2);
        }
        r.2
    }

    /// DHT gets started for `GET /key/{h}` (concurrent requests of one key share one).
    pub fn dht_get_count(&self) -> u64 {
        self.inner.gets.dht_gets()
    }

    /// Keys with a DHT listen (shared by HTTP listen streams and push subscribers).
    pub fn feed_count(&self) -> usize {
        self.inner.hub.len()
    }

    /// Open listen streams.
    pub fn listen_count(&self) -> usize {
        self.inner.streams.total.load(Ordering::SeqCst)
    }

    /// (keys with permanent puts, permanent puts, distinct push tokens, subscriptions)
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let st = self.inner.state.lock();
        let mut tokens: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for pk in st.push_keys.values() {
            for (t, _) in pk.subs.keys() {
                tokens.insert(t.as_str());
            }
        }
        (st.perms.len(), st.perm_count, tokens.len(), st.sub_count)
    }

    /// Number of keys with a shared push listen.
    pub fn push_key_count(&self) -> usize {
        self.inner.state.lock().push_keys.len()
    }

    /// Takes a listen-stream slot for `ip`.
    pub fn acquire_stream(&self, ip: IpAddr) -> Result<StreamSlot, Refusal> {
        let lim = &self.inner.opts.limits;
        let mut m = self.inner.streams.per_ip.lock();
        if self.inner.streams.total.load(Ordering::SeqCst) >= lim.streams {
            self.inner.metrics.refused(Reason::GlobalCap);
            return Err(Refusal::Global);
        }
        let c = m.entry(ip).or_insert(0);
        if *c >= lim.streams_per_ip {
            self.inner.metrics.refused(Reason::PerIpLimit);
            return Err(Refusal::PerIp);
        }
        *c += 1;
        self.inner.streams.total.fetch_add(1, Ordering::SeqCst);
        self.inner.metrics.listen_streams.inc();
        Ok(StreamSlot {
            proxy: Arc::downgrade(&self.inner),
            ip,
        })
    }

    fn lease_end(&self) -> u64 {
        now_ms() + u64::try_from(self.inner.opts.timers.lease.as_millis()).unwrap_or(u64::MAX)
    }

    fn save_put(&self, key: &Key, p: &PermPut) {
        if let Some(s) = &self.inner.store {
            let rec = PutRecord {
                key: *key,
                value: p.value.clone(),
                expires_ms: p.expires_ms,
                push: p.push.clone(),
                timeout_sent: p.timeout_sent,
            };
            if s.save_put(&rec).is_err() {
                tracing::error!("cannot persist a permanent put");
            }
        }
    }

    /// Permanent put (spec B.7): dedupe, lease, DHT permanent put, persistence.
    pub async fn put_permanent(
        &self,
        key: Key,
        mut value: Value,
        push: Option<PushInfo>,
    ) -> PermOutcome {
        let token = push
            .as_ref()
            .map(|p| (p.token.clone(), p.client_id.clone()));
        let same_owner = |p: &PermPut| {
            p.push
                .as_ref()
                .map(|x| (x.token.clone(), x.client_id.clone()))
                == token
        };
        let previous: Option<Value>;
        {
            let mut st = self.inner.state.lock();
            if value.id == 0 {
                let lease = self.lease_end();
                if let Some(p) = st.perms.get_mut(&key).and_then(|v| {
                    v.iter_mut()
                        .find(|p| same_owner(p) && p.value.same_content(&value))
                }) {
                    p.expires_ms = lease;
                    p.timeout_sent = false;
                    if let Some(pi) = &push {
                        p.push = Some(pi.clone());
                    }
                    let out = p.value.clone();
                    let snapshot = PermPut {
                        value: p.value.clone(),
                        expires_ms: p.expires_ms,
                        push: p.push.clone(),
                        timeout_sent: false,
                    };
                    drop(st);
                    self.save_put(&key, &snapshot);
                    return PermOutcome::Stored(out);
                }
                value.id = random_id();
            }
            previous = st
                .perms
                .get(&key)
                .and_then(|v| v.iter().find(|p| p.value.id == value.id))
                .map(|p| p.value.clone());
            if previous.is_none() && st.perm_count >= self.inner.opts.limits.permanent_puts {
                self.inner.metrics.refused(Reason::GlobalCap);
                return PermOutcome::Refused(Refusal::Global);
            }
        }
        if previous.is_some() {
            // The node keeps one refresh per (key, id): stop the old one before re-announcing.
            self.inner.backend.cancel_put(key, value.id);
        }
        if !self.inner.backend.put(key, value.clone(), true).await {
            if let Some(old) = previous {
                // Keep the lease that was acknowledged before: announce the old value again.
                let backend = self.inner.backend.clone();
                tokio::spawn(async move {
                    backend.put(key, old, true).await;
                });
            }
            return PermOutcome::Failed;
        }
        let p = PermPut {
            value: value.clone(),
            expires_ms: self.lease_end(),
            push,
            timeout_sent: false,
        };
        self.save_put(&key, &p);
        let mut st = self.inner.state.lock();
        let list = st.perms.entry(key).or_default();
        if let Some(old) = list.iter_mut().find(|o| o.value.id == value.id) {
            *old = p;
        } else {
            list.push(p);
            st.perm_count += 1;
            self.inner.metrics.permanent_puts.inc();
        }
        PermOutcome::Stored(value)
    }

    /// SUBSCRIBE (spec B.8).
    pub fn subscribe(
        &self,
        key: Key,
        info: PushInfo,
        ip: Option<IpAddr>,
    ) -> Result<SubscribeOutcome, Refusal> {
        let expires_ms = self.lease_end();
        let mut st = self.inner.state.lock();
        let id = (info.token.clone(), info.client_id.clone());
        if let Some(sub) = st
            .push_keys
            .get_mut(&key)
            .and_then(|pk| pk.subs.get_mut(&id))
        {
            sub.session_id = info.session_id.clone();
            sub.platform = info.platform;
            sub.topic = info.topic.clone();
            sub.expires_ms = expires_ms;
            sub.timeout_sent = false;
            drop(st);
            self.save_sub(&key, &info, expires_ms);
            return Ok(SubscribeOutcome::Renewed);
        }
        let lim = &self.inner.opts.limits;
        if st.sub_count >= lim.subscriptions {
            self.inner.metrics.refused(Reason::GlobalCap);
            return Err(Refusal::Global);
        }
        if let Some(ip) = ip {
            let c = st.sub_ips.entry(ip).or_insert(0);
            if *c >= lim.subscriptions_per_ip {
                self.inner.metrics.refused(Reason::PerIpLimit);
                return Err(Refusal::PerIp);
            }
            *c += 1;
        }
        self.insert_sub(&mut st, key, info.clone(), expires_ms, false, ip);
        drop(st);
        self.save_sub(&key, &info, expires_ms);
        Ok(SubscribeOutcome::New)
    }

    fn save_sub(&self, key: &Key, info: &PushInfo, expires_ms: u64) {
        if let Some(s) = &self.inner.store
            && s.save_sub(&SubRecord {
                key: *key,
                push: info.clone(),
                expires_ms,
                timeout_sent: false,
            })
            .is_err()
        {
            tracing::error!("cannot persist a push subscription");
        }
    }

    fn insert_sub(
        &self,
        st: &mut State,
        key: Key,
        info: PushInfo,
        expires_ms: u64,
        timeout_sent: bool,
        ip: Option<IpAddr>,
    ) {
        let sub = Sub {
            session_id: info.session_id.clone(),
            platform: info.platform,
            topic: info.topic.clone(),
            expires_ms,
            timeout_sent,
            ip,
        };
        st.sub_count += 1;
        self.inner.metrics.subscriptions.inc();
        let id = (info.token, info.client_id);
        if let Some(pk) = st.push_keys.get_mut(&key) {
            // A shared listen already runs: the newcomer gets the current values at once, as
            // its own DHT listen would have given it.
            if !pk.current.is_empty() {
                let values: Vec<Value> = pk.current.values().cloned().collect();
                self.push_values(&key, &id.0, &id.1, &sub, &values, false);
            }
            pk.subs.insert(id, sub);
            return;
        }
        // The key's DHT listen is the one HTTP listen streams use (one per key in all).
        let feed = self.inner.hub.subscribe(key, &self.inner.backend);
        let (hub, weak) = (self.inner.hub.clone(), Arc::downgrade(&self.inner));
        let task = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let crate::feed::Subscription {
                snapshot,
                mut rx,
                guard,
            } = feed;
            let values = |items: &[crate::feed::FeedItem]| -> Vec<Value> {
                items.iter().map(|i| (*i.value).clone()).collect()
            };
            if !snapshot.is_empty() {
                // The listen already ran for streams: its current values are this key's
                // first callback.
                let Some(inner) = weak.upgrade() else { return };
                Self { inner }.on_push_event(&key, values(&snapshot), false);
            }
            loop {
                let (vals, expired) = match rx.recv().await {
                    Ok(ev) => (values(&ev.items), ev.expired),
                    // Fell behind: the current values, as a change (clients then re-get).
                    Err(RecvError::Lagged(_)) => (
                        values(&hub.snapshot(&key, guard.generation()).unwrap_or_default()),
                        false,
                    ),
                    Err(RecvError::Closed) => return,
                };
                if vals.is_empty() {
                    continue;
                }
                let Some(inner) = weak.upgrade() else { return };
                Self { inner }.on_push_event(&key, vals, expired);
            }
        });
        let mut subs = HashMap::new();
        subs.insert(id, sub);
        st.push_keys.insert(
            key,
            PushKey {
                subs,
                current: HashMap::new(),
                _task: AbortOnDrop(task),
            },
        );
        self.inner.metrics.push_keys.inc();
    }

    /// A change on a subscribed key (values already verified by the feed).
    fn on_push_event(&self, key: &Key, values: Vec<Value>, expired: bool) {
        if values.is_empty() {
            return;
        }
        let mut st = self.inner.state.lock();
        let Some(pk) = st.push_keys.get_mut(key) else {
            return;
        };
        for v in &values {
            if expired {
                pk.current.remove(&v.id);
            } else {
                pk.current.insert(v.id, v.clone());
            }
        }
        for ((token, cid), sub) in &pk.subs {
            self.push_values(key, token, cid, sub, &values, expired);
        }
    }

    fn push_values(
        &self,
        key: &Key,
        token: &str,
        cid: &str,
        sub: &Sub,
        values: &[Value],
        expired: bool,
    ) {
        let (data, high) = push::value_payload(
            self.inner.opts.push_format,
            key,
            cid,
            &sub.session_id,
            now_ms(),
            values,
            expired,
        );
        self.inner.pusher.enqueue(PushJob {
            target: PushTarget {
                token: PushToken::new(token.to_owned()),
                platform: sub.platform,
                topic: sub.topic.clone(),
            },
            data,
            high,
            timeout: false,
        });
    }

    /// UNSUBSCRIBE (spec B.9). Returns whether something was removed.
    pub fn unsubscribe(&self, key: &Key, token: &str, client_id: &str) -> bool {
        let mut st = self.inner.state.lock();
        let removed = self.remove_sub(&mut st, key, token, client_id);
        drop(st);
        if removed && let Some(s) = &self.inner.store {
            let _ = s.delete_sub(key, token, client_id);
        }
        removed
    }

    fn remove_sub(&self, st: &mut State, key: &Key, token: &str, client_id: &str) -> bool {
        let Some(pk) = st.push_keys.get_mut(key) else {
            return false;
        };
        let Some(sub) = pk.subs.remove(&(token.to_owned(), client_id.to_owned())) else {
            return false;
        };
        let empty = pk.subs.is_empty();
        if empty {
            st.push_keys.remove(key);
            self.inner.metrics.push_keys.dec();
        }
        st.sub_count -= 1;
        self.inner.metrics.subscriptions.dec();
        if let Some(ip) = sub.ip
            && let Some(c) = st.sub_ips.get_mut(&ip)
        {
            *c -= 1;
            if *c == 0 {
                st.sub_ips.remove(&ip);
            }
        }
        true
    }

    /// Sends a test push (`/node/pingPush`).
    pub fn ping_push(&self, info: &PushInfo) {
        let mut data = serde_json::Map::new();
        data.insert(
            "to".into(),
            serde_json::Value::String(info.client_id.clone()),
        );
        data.insert("pong".into(), serde_json::Value::Bool(true));
        self.inner.pusher.enqueue(PushJob {
            target: PushTarget {
                token: PushToken::new(info.token.clone()),
                platform: info.platform,
                topic: info.topic.clone(),
            },
            data,
            high: true,
            timeout: false,
        });
    }

    /// Expires leases and sends "timeout" pushes. Called periodically.
    pub fn sweep(&self) {
        let now = now_ms();
        let margin = u64::try_from(self.inner.opts.timers.margin.as_millis()).unwrap_or(u64::MAX);
        let mut jobs = Vec::new();
        let mut dead_puts = Vec::new();
        let mut dead_subs = Vec::new();
        // Leases whose timeout push goes out now: the flag is persisted before the push is
        // queued, so a restart neither repeats it nor (unless it crashes in between) skips it.
        let mut sent_puts = Vec::new();
        let mut sent_subs = Vec::new();
        let mut st = self.inner.state.lock();
        for (key, list) in &mut st.perms {
            list.retain_mut(|p| {
                if now >= p.expires_ms {
                    dead_puts.push((*key, p.value.id));
                    return false;
                }
                if !p.timeout_sent && now + margin >= p.expires_ms {
                    p.timeout_sent = true;
                    sent_puts.push(PutRecord {
                        key: *key,
                        value: p.value.clone(),
                        expires_ms: p.expires_ms,
                        push: p.push.clone(),
                        timeout_sent: true,
                    });
                    if let Some(pi) = &p.push {
                        jobs.push(PushJob {
                            target: PushTarget {
                                token: PushToken::new(pi.token.clone()),
                                platform: pi.platform,
                                topic: pi.topic.clone(),
                            },
                            data: push::timeout_payload(
                                key,
                                &pi.client_id,
                                &pi.session_id,
                                Some(p.value.id),
                            ),
                            high: false,
                            timeout: true,
                        });
                    }
                }
                true
            });
        }
        st.perms.retain(|_, l| !l.is_empty());
        st.perm_count -= dead_puts.len();
        for (key, pk) in &mut st.push_keys {
            for ((token, cid), sub) in &mut pk.subs {
                if now >= sub.expires_ms {
                    dead_subs.push((*key, token.clone(), cid.clone()));
                } else if !sub.timeout_sent && now + margin >= sub.expires_ms {
                    sub.timeout_sent = true;
                    sent_subs.push(SubRecord {
                        key: *key,
                        push: PushInfo {
                            token: token.clone(),
                            client_id: cid.clone(),
                            session_id: sub.session_id.clone(),
                            platform: sub.platform,
                            topic: sub.topic.clone(),
                        },
                        expires_ms: sub.expires_ms,
                        timeout_sent: true,
                    });
                    jobs.push(PushJob {
                        target: PushTarget {
                            token: PushToken::new(token.clone()),
                            platform: sub.platform,
                            topic: sub.topic.clone(),
                        },
                        data: push::timeout_payload(key, cid, &sub.session_id, None),
                        high: false,
                        timeout: true,
                    });
                }
            }
        }
        for (key, token, cid) in &dead_subs {
            self.remove_sub(&mut st, key, token, cid);
        }
        // Written under the state lock (rare: once per lease), so that a renewal cannot be
        // overwritten by this older record.
        if let Some(s) = &self.inner.store {
            for r in &sent_puts {
                if s.save_put(r).is_err() {
                    tracing::error!("cannot persist a permanent put");
                }
            }
            for r in &sent_subs {
                if s.save_sub(r).is_err() {
                    tracing::error!("cannot persist a push subscription");
                }
            }
        }
        drop(st);
        for _ in &dead_puts {
            self.inner.metrics.permanent_puts.dec();
        }
        for (key, id) in &dead_puts {
            self.inner.backend.cancel_put(*key, *id);
            if let Some(s) = &self.inner.store {
                let _ = s.delete_put(key, *id);
            }
        }
        if let Some(s) = &self.inner.store {
            for (key, token, cid) in &dead_subs {
                let _ = s.delete_sub(key, token, cid);
            }
        }
        for j in jobs {
            self.inner.pusher.enqueue(j);
        }
    }

    /// Reloads persisted permanent puts and subscriptions with their remaining lease.
    fn restore(&self) -> Result<(), ProxyError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let (puts, subs) = store.load()?;
        let now = now_ms();
        let mut st = self.inner.state.lock();
        for r in puts {
            if r.expires_ms <= now {
                let _ = store.delete_put(&r.key, r.value.id);
                continue;
            }
            let backend = self.inner.backend.clone();
            let (k, v) = (r.key, r.value.clone());
            tokio::spawn(async move {
                backend.put(k, v, true).await;
            });
            st.perms.entry(r.key).or_default().push(PermPut {
                value: r.value,
                expires_ms: r.expires_ms,
                push: r.push,
                timeout_sent: r.timeout_sent,
            });
            st.perm_count += 1;
            self.inner.metrics.permanent_puts.inc();
        }
        for r in subs {
            if r.expires_ms <= now {
                let _ = store.delete_sub(&r.key, &r.push.token, &r.push.client_id);
                continue;
            }
            self.insert_sub(&mut st, r.key, r.push, r.expires_ms, r.timeout_sent, None);
        }
        Ok(())
    }
}

/// A random non-zero value id.
pub fn random_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}
