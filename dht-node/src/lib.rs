//! OpenDHT-compatible DHT node (wire-compatible with OpenDHT 2.4 / Jami) and bootstrap node.
//!
//! The protocol logic lives sans-IO in [`waypost_protocol::dht`]; this crate drives it with
//! tokio: one UDP socket per bound address (IPv4 and IPv6), a driver task that owns the
//! [`Dht`] engine, and a cloneable [`NodeHandle`] for client operations.
//!
//! # Using a node from another crate (e.g. the DHT proxy)
//!
//! ```no_run
//! # async fn demo() -> Result<(), waypost_dht_node::NodeError> {
//! use waypost_dht_node::{NodeOptions, bind_sockets, spawn};
//! use waypost_protocol::dht::{InfoHash, Query, Value};
//! let shutdown = waypost_net::shutdown::Shutdown::new();
//! let sockets = bind_sockets(&["127.0.0.1:0".parse().unwrap()])?;
//! let mut opts = NodeOptions::default();
//! opts.bootstrap = vec!["127.0.0.1:4222".parse().unwrap()];
//! let node = spawn(opts, sockets, &shutdown, None)?;
//! node.wait_connected(std::time::Duration::from_secs(5)).await;
//! let key = InfoHash::get("testkey");
//! let put = node.put(key, Value::new(b"hello".to_vec()), false).await?;   // PutOutcome { id, stored }
//! let values = node.get_all(key, Query::all()).await?;                   // Vec<Arc<Value>>
//! let mut listen = node.listen(key, Query::all())?;                      // drop = cancel
//! while let Some(ev) = listen.events.recv().await { let _ = (ev.values, ev.expired); }
//! node.cancel_put(key, put.id)?;                                         // stop a permanent put
//! let status = node.status();                                            // sync snapshot
//! # let _ = (values, status); Ok(()) }
//! ```
//!
//! API contract (stable): [`NodeHandle`] is `Clone + Send + Sync`; `get` returns a
//! [`GetStream`] of value batches ending when the search completes; `put` resolves when the
//! announce completes (`stored` = acknowledged by at least one node); permanent puts are
//! refreshed by the node until `cancel_put`; `listen` delivers current values first, then
//! [`ListenEvent`]s (`expired: true` for expirations); `status` never blocks.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use waypost_net::config::AdminAddr;
use waypost_net::shutdown::Shutdown;
use waypost_protocol::dht::storage::StorageLimits;
use waypost_protocol::dht::{Config as EngineConfig, Dht, Event, InfoHash, OpId};

mod handle;
pub mod metrics;

use handle::{Command, GetItem};
pub use handle::{
    FamilyStatus, GetStream, Listen, ListenEvent, ListenGuard, NodeHandle, NodeStatus, PutOutcome,
};

/// Jami's public bootstrap host (not used unless configured).
pub const JAMI_BOOTSTRAP: &str = "bootstrap.jami.net:4222";
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 4222;

/// Errors of the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot bind the DHT socket: {0}")]
    Bind(#[from] waypost_net::NetError),
    /// A bootstrap host could not be resolved.
    #[error("cannot resolve a bootstrap host")]
    Resolve,
    /// The node has stopped.
    #[error("the DHT node has stopped")]
    Stopped,
    /// The value is larger than 64 KiB (no OpenDHT node would store it).
    #[error("value too large")]
    ValueTooLarge,
    /// Socket I/O failed.
    #[error("socket error: {0:?}")]
    Io(std::io::ErrorKind),
}

waypost_net::layered_config! {
    /// The DHT node's configuration.
    pub struct NodeConfig / NodeLayer {
        /// UDP port, for every bound address (0 = ephemeral).
        #[arg(long, short = 'p', env = "WAYPOST_DHT_PORT")]
        pub port: u16 = DEFAULT_PORT,
        /// Address to bind (repeatable). Default: 0.0.0.0 and :: (both families).
        #[arg(long = "bind", env = "WAYPOST_DHT_BIND", value_delimiter = ',')]
        pub bind: Vec<IpAddr> = Vec::new(),
        /// Bootstrap node host:port (repeatable; port defaults to 4222). Jami's public network
        /// uses bootstrap.jami.net:4222. Default: none.
        #[arg(long = "bootstrap", short = 'b', env = "WAYPOST_DHT_BOOTSTRAP", value_delimiter = ',')]
        pub bootstrap: Vec<String> = Vec::new(),
        /// Network id (0 = the public Jami network).
        #[arg(long, short = 'n', env = "WAYPOST_DHT_NETWORK")]
        pub network: u32 = 0,
        /// Maximum values stored per key.
        #[arg(long, env = "WAYPOST_DHT_MAX_VALUES_PER_KEY")]
        pub max_values_per_key: usize = 65_536,
        /// Maximum bytes of values stored in total.
        #[arg(long, env = "WAYPOST_DHT_MAX_STORAGE_BYTES")]
        pub max_storage_bytes: usize = 64 * 1024 * 1024,
        /// Requests per second accepted from one IP (0 = unlimited).
        #[arg(long, env = "WAYPOST_DHT_RATE_LIMIT_PER_IP")]
        pub rate_limit_per_ip: u32 = 1024,
        /// Requests per second accepted in total (0 = unlimited).
        #[arg(long, env = "WAYPOST_DHT_RATE_LIMIT")]
        pub rate_limit: u32 = 8192,
        /// Admin listener (/metrics, /healthz, /readyz), or "off".
        #[arg(long, env = "WAYPOST_DHT_ADMIN_LISTEN")]
        pub admin_listen: AdminAddr = AdminAddr::Off,
        /// Allow a non-loopback admin listener.
        #[arg(long, env = "WAYPOST_DHT_ADMIN_PUBLIC", num_args = 0..=1, default_missing_value = "true")]
        pub admin_public: bool = false,
        /// Read line commands on standard input (g/p/l/ll/q; see docs/dht-node.md).
        #[arg(long, short = 'i', env = "WAYPOST_DHT_INTERACTIVE", num_args = 0..=1, default_missing_value = "true")]
        pub interactive: bool = false,
    }
}

/// A validated configuration.
#[derive(Clone)]
pub struct Runtime {
    /// Socket addresses to bind.
    pub bind: Vec<SocketAddr>,
    /// Bootstrap host:port strings (resolved at start).
    pub bootstrap: Vec<String>,
    /// Engine options.
    pub options: NodeOptions,
    /// Admin listener.
    pub admin: AdminAddr,
    /// Line commands on stdin.
    pub interactive: bool,
}

/// Engine options for [`spawn`].
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Network id.
    pub network: u32,
    /// Storage limits.
    pub limits: StorageLimits,
    /// Per-IP request rate limit (0 = off).
    pub rate_limit_per_ip: u32,
    /// Global request rate limit (0 = off).
    pub rate_limit: u32,
    /// Resolved bootstrap addresses.
    pub bootstrap: Vec<SocketAddr>,
    /// Fixed node id (random if `None`).
    pub node_id: Option<InfoHash>,
    /// How long a get or put waits for nodes (while none is reachable) before failing.
    pub op_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            network: 0,
            limits: StorageLimits::default(),
            rate_limit_per_ip: 1024,
            rate_limit: 8192,
            bootstrap: Vec::new(),
            node_id: None,
            op_timeout: waypost_protocol::dht::engine::DEFAULT_OP_TIMEOUT,
        }
    }
}

/// Validates the configuration (before anything is bound).
pub fn validate(cfg: &NodeConfig) -> Result<Runtime, NodeError> {
    waypost_net::config::check_admin_addr(cfg.admin_listen, cfg.admin_public)?;
    if cfg.max_storage_bytes < 65_536 {
        return Err(NodeError::Config(
            "max-storage-bytes must be at least 65536".into(),
        ));
    }
    if cfg.max_values_per_key == 0 {
        return Err(NodeError::Config(
            "max-values-per-key must be at least 1".into(),
        ));
    }
    for b in &cfg.bootstrap {
        split_host_port(b)
            .ok_or_else(|| NodeError::Config("bootstrap must be host:port or host".into()))?;
    }
    let ips = if cfg.bind.is_empty() {
        vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    } else {
        cfg.bind.clone()
    };
    let mut bind: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, cfg.port))
        .collect();
    bind.dedup();
    Ok(Runtime {
        bind,
        bootstrap: cfg.bootstrap.clone(),
        options: NodeOptions {
            network: cfg.network,
            limits: StorageLimits {
                max_values_per_key: cfg.max_values_per_key,
                max_bytes: cfg.max_storage_bytes,
            },
            rate_limit_per_ip: cfg.rate_limit_per_ip,
            rate_limit: cfg.rate_limit,
            bootstrap: Vec::new(),
            node_id: None,
            ..NodeOptions::default()
        },
        admin: cfg.admin_listen,
        interactive: cfg.interactive,
    })
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some((a.ip().to_string(), a.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip.to_string(), DEFAULT_PORT));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port: u16 = p.parse().ok()?;
            Some((h.to_owned(), if port == 0 { DEFAULT_PORT } else { port }))
        }
        None => Some((s.to_owned(), DEFAULT_PORT)),
        _ => None,
    }
}

/// Resolves bootstrap host:port strings.
pub async fn resolve_bootstrap(list: &[String]) -> Result<Vec<SocketAddr>, NodeError> {
    let mut out = Vec::new();
    for b in list {
        let (h, p) = split_host_port(b).ok_or(NodeError::Resolve)?;
        let addrs = tokio::net::lookup_host((h.as_str(), p))
            .await
            .map_err(|_| NodeError::Resolve)?;
        out.extend(addrs);
    }
    Ok(out)
}

/// Binds one UDP socket per address (IPv6 sockets are v6-only). An IPv6 wildcard that cannot
/// be bound (no IPv6 on the host) is skipped when another socket was bound.
pub fn bind_sockets(addrs: &[SocketAddr]) -> Result<Vec<UdpSocket>, NodeError> {
    let opts = waypost_net::listen::SocketOptions::new("dht udp");
    let mut out = Vec::new();
    let mut first_err = None;
    for a in addrs {
        match waypost_net::listen::bind_udp(*a, &opts) {
            Ok(s) => out.push(s),
            Err(e) if a.is_ipv6() && a.ip().is_unspecified() => first_err = first_err.or(Some(e)),
            Err(e) => return Err(e.into()),
        }
    }
    if out.is_empty() {
        return Err(first_err.map_or_else(
            || NodeError::Config("nothing to bind".into()),
            NodeError::from,
        ));
    }
    Ok(out)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts a node on `sockets` (already bound) and returns its handle. The driver stops when
/// `shutdown` is triggered.
pub fn spawn(
    opts: NodeOptions,
    sockets: Vec<UdpSocket>,
    shutdown: &Shutdown,
    metrics: Option<metrics::Metrics>,
) -> Result<NodeHandle, NodeError> {
    // Local addresses are read once here: `flush` picks a socket per datagram by family and
    // must not ask the kernel (getsockname) every time.
    let local: Vec<Option<SocketAddr>> = sockets.iter().map(|s| s.local_addr().ok()).collect();
    let family_socket = [false, true].map(|v6| {
        local
            .iter()
            .position(|a| a.is_some_and(|a| a.is_ipv6() == v6))
    });
    let ipv4 = family_socket[0].is_some();
    let ipv6 = family_socket[1].is_some();
    let cfg = EngineConfig {
        node_id: opts.node_id,
        network: opts.network,
        limits: opts.limits,
        rate_limit_per_ip: opts.rate_limit_per_ip,
        rate_limit_global: opts.rate_limit,
        ipv4,
        ipv6,
        filter_martians: true,
        op_timeout: opts.op_timeout,
    };
    use rand::SeedableRng as _;
    let rng = Box::new(rand::rngs::StdRng::from_os_rng());
    let now = Instant::now();
    let mut dht = Dht::new(cfg, now, unix_now(), rng);
    if !opts.bootstrap.is_empty() {
        dht.bootstrap(now, &opts.bootstrap);
    }
    let node_id = dht.node_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(NodeStatus {
        node_id,
        ..NodeStatus::default()
    });
    let sockets: Vec<Arc<UdpSocket>> = sockets.into_iter().map(Arc::new).collect();
    let (in_tx, in_rx) = mpsc::channel::<(usize, SocketAddr, Vec<u8>)>(8192);
    for (i, s) in sockets.iter().enumerate() {
        let s = s.clone();
        let in_tx = in_tx.clone();
        let sd = shutdown.clone();
        shutdown.spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    _ = sd.cancelled() => break,
                    r = s.recv_from(&mut buf) => match r {
                        Ok((n, from)) => {
                            // Full queue: drop (the peer retransmits).
                            if let Err(mpsc::error::TrySendError::Closed(_)) = in_tx.try_send((i, from, buf[..n].to_vec())) {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error.kind = ?e.kind(), "dht receive error");
                        }
                    }
                }
            }
        });
    }
    drop(in_tx);
    let driver = Driver {
        dht,
        sockets,
        family_socket,
        cmds: rx,
        incoming: in_rx,
        status: status_tx,
        metrics,
        gets: HashMap::new(),
        puts: HashMap::new(),
        permanent: HashMap::new(),
        listens: HashMap::new(),
        listen_tokens: HashMap::new(),
        next_status: now,
    };
    let sd = shutdown.clone();
    shutdown.spawn(driver.run(sd));
    Ok(NodeHandle {
        tx,
        status: status_rx,
        next_token: Arc::new(AtomicU64::new(1)),
        node_id,
    })
}

/// Runs a node from a validated configuration until shutdown (what `main` does after binding).
pub async fn run(
    rt: Runtime,
    sockets: Vec<UdpSocket>,
    shutdown: Shutdown,
    metrics: Option<metrics::Metrics>,
) -> Result<NodeHandle, NodeError> {
    let mut opts = rt.options.clone();
    opts.bootstrap = resolve_bootstrap(&rt.bootstrap).await?;
    spawn(opts, sockets, &shutdown, metrics)
}

struct Driver {
    dht: Dht,
    sockets: Vec<Arc<UdpSocket>>,
    /// Index in `sockets` of the first IPv4 (0) and IPv6 (1) socket.
    family_socket: [Option<usize>; 2],
    cmds: mpsc::UnboundedReceiver<Command>,
    incoming: mpsc::Receiver<(usize, SocketAddr, Vec<u8>)>,
    status: watch::Sender<NodeStatus>,
    metrics: Option<metrics::Metrics>,
    gets: HashMap<OpId, mpsc::UnboundedSender<GetItem>>,
    puts: HashMap<OpId, (Vec<oneshot::Sender<PutOutcome>>, u64)>,
    permanent: HashMap<(InfoHash, u64), OpId>,
    listens: HashMap<OpId, mpsc::UnboundedSender<ListenEvent>>,
    listen_tokens: HashMap<u64, OpId>,
    next_status: Instant,
}

impl Driver {
    async fn run(mut self, shutdown: Shutdown) {
        loop {
            let deadline = self
                .dht
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep => {
                    self.dht.handle_timeout(Instant::now());
                }
                msg = self.incoming.recv() => {
                    let Some((i, from, data)) = msg else { break };
                    let now = Instant::now();
                    self.dht.handle_datagram_on(now, i, from, &data);
                    // Drain what is already queued before flushing.
                    let mut n = 0;
                    while n < 256 {
                        let Ok((i, from, data)) = self.incoming.try_recv() else { break };
                        self.dht.handle_datagram_on(now, i, from, &data);
                        n += 1;
                    }
                }
                cmd = self.cmds.recv() => {
                    match cmd {
                        Some(c) => self.command(c),
                        // Every handle dropped: keep serving the network until shutdown.
                        None => { shutdown.cancelled().await; break; }
                    }
                }
            }
            self.flush().await;
            self.dispatch();
            let now = Instant::now();
            if now >= self.next_status {
                self.next_status = now + Duration::from_secs(1);
                self.publish_status(now);
            }
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Get { key, query, tx } => {
                let op = self.dht.get(now, key, query);
                self.gets.insert(op, tx);
            }
            Command::Put {
                key,
                value,
                permanent,
                tx,
            } => {
                let (op, id) = self.dht.put(now, key, value, permanent);
                let mut waiters = vec![tx];
                if permanent {
                    // Re-putting the same permanent value replaces the previous announce; callers
                    // still waiting on it get the new one's outcome.
                    if let Some(old) = self.permanent.insert((key, id), op) {
                        self.dht.cancel(now, old);
                        if let Some((w, _)) = self.puts.remove(&old) {
                            waiters.extend(w);
                        }
                    }
                }
                self.puts.insert(op, (waiters, id));
            }
            Command::CancelPut { key, id } => {
                if let Some(op) = self.permanent.remove(&(key, id)) {
                    self.dht.cancel(now, op);
                }
            }
            Command::Listen {
                token,
                key,
                query,
                tx,
            } => {
                let op = self.dht.listen(now, key, query);
                self.listens.insert(op, tx);
                self.listen_tokens.insert(token, op);
            }
            Command::CancelListen { token } => {
                if let Some(op) = self.listen_tokens.remove(&token) {
                    self.listens.remove(&op);
                    self.dht.cancel(now, op);
                }
            }
            Command::Bootstrap { addrs } => self.dht.bootstrap(now, &addrs),
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.dht.poll_transmit() {
            let sock = t.socket.and_then(|i| self.sockets.get(i)).or_else(|| {
                self.family_socket[usize::from(t.destination.is_ipv6())]
                    .and_then(|i| self.sockets.get(i))
            });
            if let Some(s) = sock {
                // Best effort, like any UDP send; a full buffer drops the datagram.
                if let Err(e) = s.try_send_to(&t.contents, t.destination)
                    && e.kind() == std::io::ErrorKind::WouldBlock
                {
                    let _ = s.send_to(&t.contents, t.destination).await;
                }
                if let Some(m) = &self.metrics {
                    m.sent.inc();
                }
            }
        }
    }

    fn dispatch(&mut self) {
        while let Some(e) = self.dht.poll_event() {
            match e {
                Event::Values { op, values } => {
                    if let Some(tx) = self.gets.get(&op) {
                        let _ = tx.send(GetItem::Values(values));
                    } else if let Some(tx) = self.listens.get(&op)
                        && tx
                            .send(ListenEvent {
                                values,
                                expired: false,
                            })
                            .is_err()
                    {
                        self.listens.remove(&op);
                        self.dht.cancel(Instant::now(), op);
                    }
                }
                Event::Expired { op, values } => {
                    if let Some(tx) = self.listens.get(&op) {
                        let _ = tx.send(ListenEvent {
                            values,
                            expired: true,
                        });
                    }
                }
                Event::Done { op, ok } => {
                    if let Some(tx) = self.gets.remove(&op) {
                        let _ = tx.send(GetItem::Done(ok));
                    }
                    if let Some((waiters, id)) = self.puts.remove(&op) {
                        for tx in waiters {
                            let _ = tx.send(PutOutcome { id, stored: ok });
                        }
                    }
                }
            }
        }
    }

    fn publish_status(&mut self, now: Instant) {
        let s = self.dht.stats(now);
        if let Some(m) = &self.metrics {
            m.update(&s);
        }
        let fam = |c: waypost_protocol::dht::routing::NodeCounts, d: usize| FamilyStatus {
            good: c.good as u64,
            dubious: c.dubious as u64,
            expired: c.expired as u64,
            table_depth: d as u32,
        };
        let st = NodeStatus {
            node_id: self.dht.node_id(),
            ipv4: fam(s.ipv4, s.ipv4_depth),
            ipv6: fam(s.ipv6, s.ipv6_depth),
            ops: s.ops as u64,
            stored_values: s.values as u64,
            stored_bytes: s.bytes as u64,
            remote_listeners: s.listeners as u64,
            public_ipv4: s.public_ipv4,
            public_ipv6: s.public_ipv6,
        };
        self.status.send_if_modified(|old| {
            if *old == st {
                false
            } else {
                *old = st;
                true
            }
        });
    }
}
