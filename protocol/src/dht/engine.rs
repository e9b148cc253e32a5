//! The sans-IO DHT engine (quinn style): datagrams and time in; datagrams, timers and events out.
//!
//! One [`Dht`] runs both address families (a routing table and searches per family, shared
//! node id and storage), answers every query (A.6), and runs client operations: get, put
//! (once, or permanent: kept alive by a probe `get` and `refresh` before the value expires on
//! each storing node, A.14), listen (refreshed every 20 s on the 4 closest nodes) and cancel.
//! Operations started or running while no node is reachable wait for nodes (gets and puts up
//! to [`Config::op_timeout`]) instead of failing at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::infohash::InfoHash;
use super::msg::{
    AF_INET, AF_INET6, Args, Body, Fragment, Message, QueryKind, WireValues, fragments,
    needs_fragments, pack_nodes, unpack_nodes,
};
use super::routing::{NodeCounts, RoutingTable};
use super::storage::{
    IP_SERVICE_TYPE, RefreshOutcome, Removed, Storage, StorageLimits, StoreOutcome, effective_type,
    ip_service_rewrite, type_expiration,
};
use super::value::{Field, FieldValue, MAX_VALUE_SIZE, Query, Value, parse_fields};

/// Search nodes kept per search.
pub const SEARCH_NODES: usize = 14;
/// Concurrent requests per search.
pub const ALPHA: usize = 4;
/// Nodes an announce goes to.
pub const ANNOUNCE_NODES: usize = 8;
/// Nodes a listen goes to.
pub const LISTEN_NODES: usize = 4;
/// Listen re-send period.
pub const LISTEN_REFRESH: Duration = Duration::from_secs(20);
/// Maintenance tick.
const TICK: Duration = Duration::from_secs(1);
/// Whole-reassembly and inter-fragment limits.
const RX_TIMEOUT: Duration = Duration::from_secs(10);
const RX_FRAGMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pending reassemblies kept at most.
const MAX_PARTIALS: usize = 256;
/// Search node reply older than this must be refreshed.
const SEARCH_NODE_EXPIRE: Duration = Duration::from_secs(600);
/// An idle search is dropped after this long.
const SEARCH_EXPIRE: Duration = Duration::from_secs(62 * 60);
/// Bucket refresh when idle.
const BUCKET_IDLE: Duration = Duration::from_secs(600);
/// Bootstrap retry, first period and cap.
const BOOTSTRAP_FIRST: Duration = Duration::from_secs(10);
const BOOTSTRAP_MAX: Duration = Duration::from_secs(24 * 3600);
/// While a family has no good node, its expired nodes are pinged again (first period, cap).
const RECHECK_FIRST: Duration = Duration::from_secs(10);
const RECHECK_MAX: Duration = Duration::from_secs(600);
/// Expired nodes pinged per connectivity check.
const RECHECK_NODES: usize = 8;
/// A permanent put is refreshed this long before the storing node would expire it.
const REFRESH_MARGIN: Duration = Duration::from_secs(10);
/// Default for [`Config::op_timeout`].
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Identifies a client operation.
pub type OpId = u64;

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our node id (random if `None`).
    pub node_id: Option<InfoHash>,
    /// Network id (0 = Jami's public network).
    pub network: u32,
    /// Storage limits.
    pub limits: StorageLimits,
    /// Requests per second per IP (0 = unlimited).
    pub rate_limit_per_ip: u32,
    /// Requests per second in total (0 = unlimited).
    pub rate_limit_global: u32,
    /// IPv4 is available.
    pub ipv4: bool,
    /// IPv6 is available.
    pub ipv6: bool,
    /// Drop martian sources (disable only for exotic test setups).
    pub filter_martians: bool,
    /// How long a get or put may wait for nodes (e.g. while every known node is expired)
    /// before it reports failure. Listens wait until cancelled.
    pub op_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: None,
            network: 0,
            limits: StorageLimits::default(),
            rate_limit_per_ip: 1024,
            rate_limit_global: 8192,
            ipv4: true,
            ipv6: true,
            filter_martians: true,
            op_timeout: DEFAULT_OP_TIMEOUT,
        }
    }
}

/// A datagram to send.
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The socket the triggering request came in on (reply from the same socket), if any.
    pub socket: Option<usize>,
    /// Bytes.
    pub contents: Vec<u8>,
}

/// What the engine reports to its owner.
#[derive(Debug, Clone)]
pub enum Event {
    /// Values found by a get, or pushed to a listen.
    Values {
        /// The operation.
        op: OpId,
        /// New or changed values.
        values: Vec<Arc<Value>>,
    },
    /// Values a listen saw expire.
    Expired {
        /// The operation.
        op: OpId,
        /// The expired values.
        values: Vec<Arc<Value>>,
    },
    /// A get or put finished (`ok`: a get reached nodes / a put was acknowledged by a node).
    Done {
        /// The operation.
        op: OpId,
        /// Success.
        ok: bool,
    },
}

/// Incoming query outcome (metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Answered with an error.
    Error,
    /// Dropped by the rate limiter.
    RateLimited,
}

/// Counters and gauges for metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// IPv4 nodes by state.
    pub ipv4: NodeCounts,
    /// IPv6 nodes by state.
    pub ipv6: NodeCounts,
    /// IPv4 table depth.
    pub ipv4_depth: usize,
    /// IPv6 table depth.
    pub ipv6_depth: usize,
    /// Stored values.
    pub values: usize,
    /// Stored bytes.
    pub bytes: usize,
    /// Remote listeners.
    pub listeners: usize,
    /// Running client operations.
    pub ops: usize,
    /// Incoming queries: index = kind (ping, find, get, put, listen, refresh, update), outcome.
    pub queries: [[u64; 3]; 7],
    /// Datagrams dropped (undecodable, wrong network, martian, blacklisted).
    pub dropped: u64,
    /// Our address as last reported by a peer (`sa`).
    pub public_ipv4: Option<IpAddr>,
    /// Same for IPv6.
    pub public_ipv6: Option<IpAddr>,
}

fn kind_index(k: QueryKind) -> usize {
    match k {
        QueryKind::Ping => 0,
        QueryKind::Find => 1,
        QueryKind::Get => 2,
        QueryKind::Put => 3,
        QueryKind::Listen => 4,
        QueryKind::Refresh => 5,
        QueryKind::Update => 6,
    }
}

fn fam(addr: &SocketAddr) -> usize {
    usize::from(addr.is_ipv6())
}

/// Whether a source address must be dropped (A.14).
pub fn is_martian(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return true;
    }
    match addr.ip() {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 0 || o[0] >= 224
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            (s[0] & 0xff00) == 0xff00
                || a.is_unspecified()
                || (s[0..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff)
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Purpose {
    Ping,
    Search(u64),
    /// A full `put` of a put op's value.
    Announce(OpId),
    /// The `get` (id + seq of our value) that precedes a permanent put's refresh.
    Probe(OpId),
    /// A permanent put's `refresh`.
    Refresh(OpId),
    Listen(OpId),
    Update,
}

struct Request {
    to: SocketAddr,
    node: InfoHash,
    packets: Vec<Vec<u8>>,
    attempts: u32,
    next: Instant,
    purpose: Purpose,
}

struct Partial {
    msg: Message,
    from: SocketAddr,
    socket: Option<usize>,
    sizes: Vec<usize>,
    bufs: Vec<Vec<u8>>,
    start: Instant,
    last: Instant,
}

#[derive(Clone)]
struct SNode {
    id: InfoHash,
    addr: SocketAddr,
    token: Option<Vec<u8>>,
    replied: Option<Instant>,
    queried: bool,
    pending: bool,
    failed: bool,
    /// When it was marked failed (a later reply to anything revives it).
    failed_at: Option<Instant>,
}

impl SNode {
    fn new(id: InfoHash, addr: SocketAddr) -> Self {
        Self {
            id,
            addr,
            token: None,
            replied: None,
            queried: false,
            pending: false,
            failed: false,
            failed_at: None,
        }
    }

    fn fail(&mut self, now: Instant) {
        self.failed = true;
        self.failed_at = Some(now);
    }
}

enum SearchMode {
    Find,
    Get(OpId, Query),
}

struct Search {
    target: InfoHash,
    family: usize,
    mode: SearchMode,
    nodes: Vec<SNode>,
    /// Synced (or nothing left to ask and no node to wait for).
    done: bool,
    /// No live node, but nodes are expected (expired ones in the table, or bootstrap nodes):
    /// the search waits for them instead of failing.
    waiting: bool,
    last_activity: Instant,
    /// Ops (put/listen) that use this search.
    users: HashSet<OpId>,
}

#[derive(Default, Clone)]
struct PeerOpState {
    pending: bool,
    acked: bool,
    /// Last request sent (put: the full put, or the probe that started a refresh).
    last: Option<Instant>,
    failed: bool,
    sid: u32,
    /// Put: the token of the node's latest reply (for the put that follows a probe).
    token: Option<Vec<u8>>,
}

enum OpKind {
    Get {
        seen: HashMap<u64, u16>,
        any_reply: bool,
    },
    Put {
        value: Arc<Value>,
        permanent: bool,
        created: u64,
        peers: HashMap<(usize, InfoHash), PeerOpState>,
        /// Per family: announce settled (every ready node acked or failed).
        done: [bool; 2],
        /// Families this put runs on.
        families: [bool; 2],
        /// Completion already reported.
        reported: bool,
    },
    Listen {
        query: Query,
        peers: HashMap<(usize, InfoHash), PeerOpState>,
        cache: HashMap<u64, (Arc<Value>, Instant)>,
    },
}

struct Op {
    key: InfoHash,
    searches: Vec<u64>,
    kind: OpKind,
    /// Gets and puts report failure at this time if still waiting for nodes.
    deadline: Option<Instant>,
}

/// The DHT engine. See the module documentation.
pub struct Dht {
    id: InfoHash,
    cfg: Config,
    rng: Box<dyn rand::RngCore + Send>,
    tables: [RoutingTable; 2],
    storage: Storage,
    secret: [u8; 32],
    old_secret: [u8; 32],
    next_rotate: Instant,
    requests: HashMap<u32, Request>,
    next_tid: u32,
    partials: HashMap<(SocketAddr, u32), Partial>,
    searches: HashMap<u64, Search>,
    next_search: u64,
    ops: HashMap<OpId, Op>,
    next_op: OpId,
    sids: HashMap<u32, OpId>,
    next_sid: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    start: Instant,
    start_unix: u64,
    next_tick: Instant,
    bootstrap_nodes: Vec<SocketAddr>,
    next_bootstrap: Instant,
    bootstrap_period: Duration,
    was_connected: [bool; 2],
    /// Per family: next ping of expired nodes while no node is good, and its period.
    next_recheck: [Instant; 2],
    recheck_period: [Duration; 2],
    blacklist: HashSet<SocketAddr>,
    rate_window: Instant,
    rate_ip: HashMap<IpAddr, u32>,
    rate_global: u32,
    stats: Stats,
}

impl Dht {
    /// A new node. `now`/`now_unix` anchor the monotonic and wall clocks; `rng` supplies ids,
    /// tids and token secrets.
    pub fn new(
        cfg: Config,
        now: Instant,
        now_unix: u64,
        mut rng: Box<dyn rand::RngCore + Send>,
    ) -> Self {
        let id = cfg.node_id.unwrap_or_else(|| InfoHash::random(&mut *rng));
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let mut old_secret = [0u8; 32];
        rng.fill_bytes(&mut old_secret);
        let next_tid = rng.next_u32() | 1;
        let storage = Storage::new(cfg.limits);
        Self {
            id,
            cfg,
            rng,
            tables: [RoutingTable::new(id, now), RoutingTable::new(id, now)],
            storage,
            secret,
            old_secret,
            next_rotate: now + Duration::from_secs(15 * 60),
            requests: HashMap::new(),
            next_tid,
            partials: HashMap::new(),
            searches: HashMap::new(),
            next_search: 1,
            ops: HashMap::new(),
            next_op: 1,
            sids: HashMap::new(),
            next_sid: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            start: now,
            start_unix: now_unix,
            next_tick: now,
            bootstrap_nodes: Vec::new(),
            next_bootstrap: now,
            bootstrap_period: BOOTSTRAP_FIRST,
            was_connected: [false; 2],
            next_recheck: [now; 2],
            recheck_period: [RECHECK_FIRST; 2],
            blacklist: HashSet::new(),
            rate_window: now,
            rate_ip: HashMap::new(),
            rate_global: 0,
            stats: Stats::default(),
        }
    }

    /// Our node id.
    pub fn node_id(&self) -> InfoHash {
        self.id
    }

    /// Network id.
    pub fn network(&self) -> u32 {
        self.cfg.network
    }

    /// Wall clock (unix seconds) at `now`.
    pub fn unix(&self, now: Instant) -> u64 {
        self.start_unix + now.saturating_duration_since(self.start).as_secs()
    }

    /// Read access to the storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Snapshot of counters and gauges.
    pub fn stats(&self, now: Instant) -> Stats {
        let mut s = self.stats.clone();
        s.ipv4 = self.tables[0].counts(now);
        s.ipv6 = self.tables[1].counts(now);
        s.ipv4_depth = self.tables[0].depth();
        s.ipv6_depth = self.tables[1].depth();
        s.values = self.storage.value_count();
        s.bytes = self.storage.bytes();
        s.listeners = self.storage.listener_count();
        s.ops = self.ops.len();
        s
    }

    /// The `count` known non-expired nodes closest to `target` in `addr`'s family.
    pub fn closest_known(
        &self,
        target: &InfoHash,
        count: usize,
        v6: bool,
    ) -> Vec<(InfoHash, SocketAddr)> {
        self.tables[usize::from(v6)].closest_alive(target, count)
    }

    /// Whether a family has at least one good node.
    pub fn is_connected(&self, now: Instant) -> bool {
        self.tables.iter().any(|t| t.counts(now).good > 0)
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_tick;
        for r in self.requests.values() {
            t = t.min(r.next);
        }
        Some(t)
    }

    /// Adds bootstrap addresses and pings them now.
    pub fn bootstrap(&mut self, now: Instant, nodes: &[SocketAddr]) {
        for n in nodes {
            if !self.bootstrap_nodes.contains(n) {
                self.bootstrap_nodes.push(*n);
            }
        }
        self.next_bootstrap = now;
        self.bootstrap_period = BOOTSTRAP_FIRST;
        self.next_tick = now;
    }

    /// Adds a node we learned about out of band (it is pinged).
    pub fn insert_node(&mut self, now: Instant, addr: SocketAddr) {
        self.send_request(
            now,
            addr,
            InfoHash::ZERO,
            QueryKind::Ping,
            Args::new(self.id),
            Purpose::Ping,
        );
    }

    // ----------------------------------------------------------------------------------------
    // Tokens

    fn make_token(secret: &[u8; 32], addr: &SocketAddr) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(secret);
        match addr.ip() {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update(addr.port().to_be_bytes());
        h.finalize().to_vec()
    }

    fn token_for(&self, addr: &SocketAddr) -> Vec<u8> {
        Self::make_token(&self.secret, addr)
    }

    fn token_ok(&self, addr: &SocketAddr, token: Option<&Vec<u8>>) -> bool {
        let Some(t) = token else { return false };
        t.len() == 32
            && (*t == Self::make_token(&self.secret, addr)
                || *t == Self::make_token(&self.old_secret, addr))
    }

    // ----------------------------------------------------------------------------------------
    // Sending

    fn new_tid(&mut self) -> u32 {
        loop {
            self.next_tid = self.next_tid.wrapping_add(2);
            if self.next_tid != 0 && !self.requests.contains_key(&self.next_tid) {
                return self.next_tid;
            }
        }
    }

    fn family_enabled(&self, addr: &SocketAddr) -> bool {
        if addr.is_ipv6() {
            self.cfg.ipv6
        } else {
            self.cfg.ipv4
        }
    }

    fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        node: InfoHash,
        kind: QueryKind,
        args: Args,
        purpose: Purpose,
    ) -> Option<u32> {
        if !self.family_enabled(&to) || self.blacklist.contains(&to) {
            return None;
        }
        let tid = self.new_tid();
        let msg = Message {
            tid,
            network: self.cfg.network,
            is_client: false,
            body: Body::Query(kind, args),
        };
        let packets = self.packets(&msg);
        for p in &packets {
            self.transmits.push_back(Transmit {
                destination: to,
                socket: None,
                contents: p.clone(),
            });
        }
        let jitter = Duration::from_millis(u64::from(self.rng.next_u32() % 250));
        self.requests.insert(
            tid,
            Request {
                to,
                node,
                packets,
                attempts: 1,
                next: now + Duration::from_secs(1) + jitter,
                purpose,
            },
        );
        Some(tid)
    }

    /// Header (+ fragments) for a message that may carry values.
    fn packets(&self, msg: &Message) -> Vec<Vec<u8>> {
        if let Some(vs) = msg.values() {
            if needs_fragments(vs) {
                let mut out = vec![msg.encode(true)];
                out.extend(fragments(msg.tid, msg.network, vs));
                return out;
            }
        }
        vec![msg.encode(false)]
    }

    fn reply(&mut self, to: SocketAddr, socket: Option<usize>, tid: u32, args: Args) {
        let msg = Message {
            tid,
            network: self.cfg.network,
            is_client: false,
            body: Body::Reply(args),
        };
        for p in self.packets(&msg) {
            self.transmits.push_back(Transmit {
                destination: to,
                socket,
                contents: p,
            });
        }
    }

    fn error(&mut self, to: SocketAddr, socket: Option<usize>, tid: u32, code: u16, message: &str) {
        let msg = Message {
            tid,
            network: self.cfg.network,
            is_client: false,
            body: Body::Error {
                code,
                message: message.to_owned(),
                id: self.id,
            },
        };
        self.transmits.push_back(Transmit {
            destination: to,
            socket,
            contents: msg.encode(false),
        });
    }

    fn base_reply(&self, from: &SocketAddr) -> Args {
        let mut a = Args::new(self.id);
        a.sa = Some(from.ip());
        a
    }

    fn add_nodes(
        &self,
        a: &mut Args,
        target: &InfoHash,
        want: Option<&Vec<u64>>,
        from: &SocketAddr,
        now: Instant,
    ) {
        let (w4, w6) = match want {
            Some(w) => (w.contains(&AF_INET), w.contains(&AF_INET6)),
            None => (!from.is_ipv6(), from.is_ipv6()),
        };
        if w4 {
            let n = self.tables[0].closest_for_reply(target, 8, now);
            if !n.is_empty() {
                a.n4 = Some(pack_nodes(&n, false));
            }
        }
        if w6 {
            let n = self.tables[1].closest_for_reply(target, 8, now);
            if !n.is_empty() {
                a.n6 = Some(pack_nodes(&n, true));
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Receiving

    /// Handles a datagram received on socket 0.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.handle_datagram_on(now, 0, from, data);
    }

    /// Handles a datagram received on socket `socket` (replies go out on the same socket).
    pub fn handle_datagram_on(
        &mut self,
        now: Instant,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
    ) {
        let from = canonical(from);
        if (self.cfg.filter_martians && is_martian(&from)) || self.blacklist.contains(&from) {
            self.stats.dropped += 1;
            return;
        }
        let Ok(msg) = Message::decode(data) else {
            self.stats.dropped += 1;
            return;
        };
        if msg.network != self.cfg.network {
            self.stats.dropped += 1;
            return;
        }
        self.handle_message(now, Some(socket), from, msg);
    }

    fn handle_message(
        &mut self,
        now: Instant,
        socket: Option<usize>,
        from: SocketAddr,
        msg: Message,
    ) {
        // Fragmented header: wait for the parts.
        let sizes = match &msg.body {
            Body::Query(_, a) | Body::Reply(a) => match &a.values {
                Some(WireValues::Sizes(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        if let Some(sizes) = sizes {
            self.open_partial(now, socket, from, msg, &sizes);
            return;
        }
        let tid = msg.tid;
        match msg.body {
            Body::Fragments(f) => self.on_fragments(now, from, tid, f),
            Body::Query(kind, args) => {
                if args.id == self.id {
                    self.stats.dropped += 1;
                    return;
                }
                if !self.rate_ok(now, from.ip()) {
                    self.stats.queries[kind_index(kind)][2] += 1;
                    return;
                }
                let node = args.id;
                let confirm = !msg.is_client && {
                    let t = &mut self.tables[fam(&from)];
                    let is_new = t.heard_new(node, from, now, false) == Some(true);
                    // A new node, or an expired one talking to us again (e.g. after rate
                    // limiting us): confirm it with a ping so it can become good.
                    is_new || t.get(&node).is_some_and(|n| n.expired && !n.pinging)
                };
                self.on_query(now, socket, from, tid, kind, args);
                if confirm && self.requests.len() < 4096 {
                    if let Some(n) = self.tables[fam(&from)].get_mut(&node) {
                        n.pinging = true;
                    }
                    self.send_request(
                        now,
                        from,
                        node,
                        QueryKind::Ping,
                        Args::new(self.id),
                        Purpose::Ping,
                    );
                }
            }
            Body::Reply(args) => {
                if args.id == self.id {
                    return;
                }
                self.on_reply(now, from, tid, args, msg.is_client);
            }
            Body::Error { code, id, .. } => {
                if id == self.id {
                    return;
                }
                self.on_error(now, from, tid, code);
            }
        }
    }

    fn rate_ok(&mut self, now: Instant, ip: IpAddr) -> bool {
        if now.saturating_duration_since(self.rate_window) >= Duration::from_secs(1) {
            self.rate_window = now;
            self.rate_ip.clear();
            self.rate_global = 0;
        }
        self.rate_global += 1;
        if self.cfg.rate_limit_global > 0 && self.rate_global > self.cfg.rate_limit_global {
            return false;
        }
        if self.cfg.rate_limit_per_ip > 0 {
            let c = self.rate_ip.entry(ip).or_default();
            *c += 1;
            if *c > self.cfg.rate_limit_per_ip {
                return false;
            }
        }
        true
    }

    fn open_partial(
        &mut self,
        now: Instant,
        socket: Option<usize>,
        from: SocketAddr,
        msg: Message,
        sizes: &[u64],
    ) {
        let limit = (MAX_VALUE_SIZE + 32) as u64;
        let sizes: Vec<usize> = sizes
            .iter()
            .filter(|s| **s <= limit)
            .map(|s| *s as usize)
            .collect();
        if sizes.is_empty() || sizes.len() > 64 {
            return;
        }
        // Memory bound: ≤ 4 MiB declared per message, ≤ 32 MiB over all reassemblies.
        let total: usize = sizes.iter().sum();
        if total > 4 * 1024 * 1024 {
            return;
        }
        while !self.partials.is_empty()
            && self
                .partials
                .values()
                .map(|p| p.sizes.iter().sum::<usize>())
                .sum::<usize>()
                + total
                > 32 * 1024 * 1024
        {
            if let Some(k) = self
                .partials
                .iter()
                .min_by_key(|(_, p)| p.start)
                .map(|(k, _)| *k)
            {
                self.partials.remove(&k);
            }
        }
        if self.partials.len() >= MAX_PARTIALS {
            // Drop the oldest.
            if let Some(k) = self
                .partials
                .iter()
                .min_by_key(|(_, p)| p.start)
                .map(|(k, _)| *k)
            {
                self.partials.remove(&k);
            }
        }
        let bufs = sizes.iter().map(|_| Vec::new()).collect();
        self.partials.insert(
            (from, msg.tid),
            Partial {
                msg,
                from,
                socket,
                sizes,
                bufs,
                start: now,
                last: now,
            },
        );
    }

    fn on_fragments(&mut self, now: Instant, from: SocketAddr, tid: u32, frags: Vec<Fragment>) {
        let Some(p) = self.partials.get_mut(&(from, tid)) else {
            return;
        };
        if p.from != from {
            return;
        }
        for f in frags {
            let i = f.index as usize;
            let (Some(buf), Some(&size)) = (p.bufs.get_mut(i), p.sizes.get(i)) else {
                continue;
            };
            if f.offset as usize != buf.len() || buf.len() + f.data.len() > size {
                continue; // 2.4 semantics: in order only
            }
            buf.extend_from_slice(&f.data);
        }
        p.last = now;
        let complete = p.bufs.iter().zip(&p.sizes).all(|(b, s)| b.len() == *s);
        if !complete {
            return;
        }
        let Some(p) = self.partials.remove(&(from, tid)) else {
            return;
        };
        let values: Vec<Value> = p
            .bufs
            .iter()
            .filter_map(|b| Value::unpack(b).ok())
            .collect();
        let mut msg = p.msg;
        match &mut msg.body {
            Body::Query(_, a) | Body::Reply(a) => a.values = Some(WireValues::Values(values)),
            _ => return,
        }
        self.handle_message(now, p.socket, from, msg);
    }

    fn on_query(
        &mut self,
        now: Instant,
        socket: Option<usize>,
        from: SocketAddr,
        tid: u32,
        kind: QueryKind,
        a: Args,
    ) {
        let ki = kind_index(kind);
        let ok = match kind {
            QueryKind::Ping => {
                let r = self.base_reply(&from);
                self.reply(from, socket, tid, r);
                true
            }
            QueryKind::Find => {
                let target = a.target.or(a.h).unwrap_or(a.id);
                let mut r = self.base_reply(&from);
                self.add_nodes(&mut r, &target, a.want.as_ref(), &from, now);
                r.token = Some(self.token_for(&from));
                self.reply(from, socket, tid, r);
                true
            }
            QueryKind::Get => {
                let Some(h) = a.h else {
                    self.error(from, socket, tid, 203, "Get_values with no info_hash");
                    self.stats.queries[ki][1] += 1;
                    return;
                };
                let q = a.query.clone().unwrap_or_default();
                let mut r = self.base_reply(&from);
                self.add_nodes(&mut r, &h, a.want.as_ref(), &from, now);
                r.token = Some(self.token_for(&from));
                let vals = self.storage.get(&h, &q);
                if !vals.is_empty() {
                    if q.select.is_empty() {
                        r.values = Some(WireValues::Values(
                            vals.iter().map(|v| (**v).clone()).collect(),
                        ));
                    } else {
                        r.fields = Some(q.fields_reply(vals.iter().map(|v| &**v)));
                    }
                }
                self.reply(from, socket, tid, r);
                true
            }
            QueryKind::Put => self.on_put(now, socket, from, tid, a),
            QueryKind::Listen => {
                let Some(h) = a.h else {
                    self.error(from, socket, tid, 203, "Listen with no info_hash");
                    self.stats.queries[ki][1] += 1;
                    return;
                };
                if !self.token_ok(&from, a.token.as_ref()) {
                    self.error(from, socket, tid, 401, "Listen with wrong token");
                    self.stats.queries[ki][1] += 1;
                    return;
                }
                let sid = a.sid.unwrap_or(tid);
                let q = a.query.clone().unwrap_or_default();
                let filter = Query {
                    select: vec![],
                    filters: q.filters,
                };
                let new = self
                    .storage
                    .add_listener(&h, from, sid, a.id, filter.clone(), now);
                let r = self.base_reply(&from);
                self.reply(from, socket, tid, r);
                if new {
                    let vals: Vec<Value> = self
                        .storage
                        .get(&h, &filter)
                        .iter()
                        .map(|v| (**v).clone())
                        .collect();
                    if !vals.is_empty() {
                        self.send_update_values(now, from, a.id, &h, sid, vals);
                    }
                }
                true
            }
            QueryKind::Refresh => {
                let (Some(h), Some(vid)) = (a.h, a.vid) else {
                    self.error(from, socket, tid, 203, "Refresh with no info_hash");
                    self.stats.queries[ki][1] += 1;
                    return;
                };
                if !self.token_ok(&from, a.token.as_ref()) {
                    // dhtnode 2.4.12 answers a bad refresh token with this very text (observed).
                    self.error(from, socket, tid, 401, "Put with wrong token");
                    self.stats.queries[ki][1] += 1;
                    return;
                }
                match self.storage.refresh(&h, vid, now) {
                    RefreshOutcome::NoStorage => {
                        self.error(
                            from,
                            socket,
                            tid,
                            404,
                            "Access operation for unknown storage",
                        );
                        self.stats.queries[ki][1] += 1;
                        return;
                    }
                    RefreshOutcome::Done(_) => {
                        let mut r = self.base_reply(&from);
                        r.vid = Some(vid);
                        self.reply(from, socket, tid, r);
                        self.notify_refreshed(now, &h, vid);
                    }
                }
                true
            }
            QueryKind::Update => {
                let r = self.base_reply(&from);
                self.reply(from, socket, tid, r);
                self.on_update(now, a);
                true
            }
        };
        self.stats.queries[ki][if ok { 0 } else { 1 }] += 1;
    }

    fn on_put(
        &mut self,
        now: Instant,
        socket: Option<usize>,
        from: SocketAddr,
        tid: u32,
        a: Args,
    ) -> bool {
        let Some(h) = a.h else {
            self.error(from, socket, tid, 203, "Put with no info_hash");
            return false;
        };
        if !self.token_ok(&from, a.token.as_ref()) {
            self.error(from, socket, tid, 401, "Put with wrong token");
            return false;
        }
        let Some(WireValues::Values(values)) = a.values else {
            return false;
        };
        if values.iter().any(|v| v.id == 0) {
            self.error(from, socket, tid, 203, "Put with invalid id");
            return false;
        }
        let now_unix = self.unix(now);
        let created = a.created.unwrap_or(now_unix).min(now_unix);
        // "Too far": 8+ good nodes all closer to h than we are ⇒ ack but do not store.
        let close = self.tables[fam(&from)].closest_good(&h, SEARCH_NODES, now);
        let too_far = close.len() >= ANNOUNCE_NODES
            && close
                .last()
                .is_some_and(|(far, _)| h.xor_cmp(far, &self.id) == std::cmp::Ordering::Less);
        for v in values {
            let vid = v.id;
            // IP service announcements store the sender's address (A.12); invalid ones are
            // refused (and still acknowledged, as every put).
            let v = if !v.is_encrypted() && v.vtype == IP_SERVICE_TYPE {
                ip_service_rewrite(&v, from.ip())
            } else {
                Some(v)
            };
            if let (false, Some(v)) = (too_far, v) {
                self.store_and_notify(now, &h, v, created, Some(from.ip()));
            }
            let mut r = Args::new(self.id);
            r.vid = Some(vid);
            r.sa = Some(from.ip());
            self.reply(from, socket, tid, r);
        }
        true
    }

    /// Stores a value and tells remote and local listeners.
    fn store_and_notify(
        &mut self,
        now: Instant,
        h: &InfoHash,
        v: Value,
        created: u64,
        src: Option<IpAddr>,
    ) -> StoreOutcome {
        let now_unix = self.unix(now);
        let vid = v.id;
        let (outcome, evicted) = self.storage.store(h, v, created, now, now_unix, src);
        if matches!(outcome, StoreOutcome::New | StoreOutcome::Edited) {
            let stored = self
                .storage
                .entries(h)
                .iter()
                .find(|s| s.value.id == vid)
                .map(|s| s.value.clone());
            if let Some(val) = stored {
                for (addr, sid, l) in self.storage.listeners(h) {
                    if l.query.matches(&val) {
                        self.send_update_values(now, addr, l.node_id, h, sid, vec![(*val).clone()]);
                    }
                }
                self.local_listen_values(now, h, vec![val]);
            }
        }
        self.notify_removed(now, evicted);
        outcome
    }

    /// Stores a value in our own storage (as if received from the network), telling listeners.
    pub fn store_local(&mut self, now: Instant, key: InfoHash, value: Value) -> StoreOutcome {
        let c = self.unix(now);
        self.store_and_notify(now, &key, value, c, None)
    }

    fn send_update_values(
        &mut self,
        now: Instant,
        to: SocketAddr,
        node: InfoHash,
        h: &InfoHash,
        sid: u32,
        vals: Vec<Value>,
    ) {
        let mut a = Args::new(self.id);
        a.ve = Some(1);
        a.h = Some(*h);
        a.sid = Some(sid);
        a.values = Some(WireValues::Values(vals));
        a.token = Some(self.token_for(&to));
        self.send_request(now, to, node, QueryKind::Update, a, Purpose::Update);
    }

    fn notify_refreshed(&mut self, now: Instant, h: &InfoHash, vid: u64) {
        for (addr, sid, l) in self.storage.listeners(h) {
            let mut a = Args::new(self.id);
            a.sid = Some(sid);
            a.token = Some(self.token_for(&addr));
            a.re = Some(vec![vid]);
            self.send_request(now, addr, l.node_id, QueryKind::Update, a, Purpose::Update);
        }
    }

    fn notify_removed(&mut self, now: Instant, removed: Removed) {
        for (h, vals) in removed {
            for (addr, sid, l) in self.storage.listeners(&h) {
                let ids: Vec<u64> = vals
                    .iter()
                    .filter(|v| l.query.matches(v))
                    .map(|v| v.id)
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let mut a = Args::new(self.id);
                a.sid = Some(sid);
                a.token = Some(self.token_for(&addr));
                a.exp = Some(ids);
                self.send_request(now, addr, l.node_id, QueryKind::Update, a, Purpose::Update);
            }
            self.local_listen_expired(&h, &vals);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Replies and errors to our requests

    fn on_reply(&mut self, now: Instant, from: SocketAddr, tid: u32, a: Args, is_client: bool) {
        let Some(req) = self.requests.get(&tid) else {
            return;
        };
        if req.to != from {
            return;
        }
        if !req.node.is_zero() && req.node != a.id {
            return;
        }
        let Some(req) = self.requests.remove(&tid) else {
            return;
        };
        let f = fam(&from);
        if !is_client {
            self.tables[f].heard(a.id, from, now, true);
            if let Some(n) = self.tables[f].get_mut(&a.id) {
                n.pinging = false;
            }
        }
        if let Some(sa) = a.sa {
            if sa.is_ipv6() {
                self.stats.public_ipv6 = Some(sa)
            } else {
                self.stats.public_ipv4 = Some(sa)
            }
        }
        // Nodes in the reply go into the routing table (unconfirmed) and searches.
        let mut learned = Vec::new();
        for (blob, v6) in [(&a.n4, false), (&a.n6, true)] {
            let Some(b) = blob else { continue };
            let Some(list) = unpack_nodes(b, v6) else {
                continue;
            };
            for (id, mut addr) in list {
                if id == self.id || id.is_zero() {
                    continue;
                }
                if addr.ip().is_loopback() && addr.is_ipv6() == from.is_ipv6() {
                    addr.set_ip(from.ip());
                }
                if (self.cfg.filter_martians && is_martian(&addr)) || self.blacklist.contains(&addr)
                {
                    continue;
                }
                learned.push((id, addr));
            }
        }
        for (id, addr) in &learned {
            if self.tables[fam(addr)].heard_new(*id, *addr, now, false) == Some(true)
                && self.requests.len() < 4096
            {
                // Confirm new nodes so they become good (and can be handed out in replies).
                if let Some(n) = self.tables[fam(addr)].get_mut(id) {
                    n.pinging = true;
                }
                self.send_request(
                    now,
                    *addr,
                    *id,
                    QueryKind::Ping,
                    Args::new(self.id),
                    Purpose::Ping,
                );
            }
        }
        match req.purpose {
            Purpose::Ping | Purpose::Update => {}
            Purpose::Search(sid) => {
                if a.token.is_none() {
                    // As the reference does: a find/get reply without a token gets its sender
                    // ignored until restart (bounded list).
                    if self.blacklist.len() >= 4096 {
                        self.blacklist.clear();
                    }
                    self.blacklist.insert(from);
                }
                self.on_search_reply(now, sid, a, learned)
            }
            Purpose::Announce(op) | Purpose::Refresh(op) | Purpose::Listen(op) => {
                if let Some(p) = self.peer_mut(op, f, &a.id) {
                    p.pending = false;
                    p.acked = true;
                }
                if !matches!(req.purpose, Purpose::Listen(_)) {
                    self.step_ops_of(now, op);
                }
            }
            Purpose::Probe(op) => self.on_probe_reply(now, op, f, from, a),
        }
    }

    /// The per-node state of a put or listen op.
    fn peer_mut(&mut self, op: OpId, f: usize, node: &InfoHash) -> Option<&mut PeerOpState> {
        match &mut self.ops.get_mut(&op)?.kind {
            OpKind::Put { peers, .. } | OpKind::Listen { peers, .. } => peers.get_mut(&(f, *node)),
            OpKind::Get { .. } => None,
        }
    }

    /// A storing node answered the probe of a permanent put: `refresh` if it still holds our
    /// value (same id, seq not lower), else the full value again (A.14).
    fn on_probe_reply(&mut self, now: Instant, op: OpId, f: usize, from: SocketAddr, a: Args) {
        let Some(Op {
            key,
            kind: OpKind::Put { value, peers, .. },
            ..
        }) = self.ops.get_mut(&op)
        else {
            return;
        };
        let Some(p) = peers.get_mut(&(f, a.id)) else {
            return;
        };
        if a.token.is_some() {
            p.token = a.token.clone();
        }
        let (vid, seq) = (value.id, value.seq);
        let holds = match (&a.fields, &a.values) {
            (Some(fields), _) => parse_fields(fields).is_some_and(|rows| {
                rows.iter()
                    .any(|r| r.id == Some(vid) && r.seq.is_some_and(|s| s >= u64::from(seq)))
            }),
            // Nodes may answer with full values (backward compatibility, A.9).
            (None, Some(WireValues::Values(vs))) => vs.iter().any(|v| v.id == vid && v.seq >= seq),
            _ => false,
        };
        let (key, token) = (*key, p.token.clone());
        match (holds, token) {
            (true, Some(token)) => {
                let mut r = Args::new(self.id);
                r.h = Some(key);
                r.vid = Some(vid);
                r.token = Some(token);
                if self
                    .send_request(now, from, a.id, QueryKind::Refresh, r, Purpose::Refresh(op))
                    .is_none()
                {
                    self.clear_peer_pending(op, f, a.id, true);
                }
            }
            _ => self.send_full_put(now, op, f, a.id, from),
        }
    }

    /// Sends the whole value of put `op` to a node again (it lacks the value, or answered a
    /// probe or refresh with an error), with the node's latest token.
    fn send_full_put(&mut self, now: Instant, op: OpId, f: usize, node: InfoHash, to: SocketAddr) {
        let unix = self.unix(now);
        let Some(Op {
            key,
            kind:
                OpKind::Put {
                    value,
                    permanent,
                    created,
                    peers,
                    ..
                },
            ..
        }) = self.ops.get_mut(&op)
        else {
            return;
        };
        let Some(p) = peers.get_mut(&(f, node)) else {
            return;
        };
        let Some(token) = p.token.clone() else {
            // No token to use: the next step puts it with the search's token.
            p.pending = false;
            p.acked = false;
            return;
        };
        let a = announce_args(self.id, *key, value, *permanent, *created, unix, token);
        p.pending = true;
        if self
            .send_request(now, to, node, QueryKind::Put, a, Purpose::Announce(op))
            .is_none()
        {
            self.clear_peer_pending(op, f, node, true);
        }
    }

    fn on_error(&mut self, now: Instant, from: SocketAddr, tid: u32, code: u16) {
        let Some(req) = self.requests.get(&tid) else {
            return;
        };
        if req.to != from {
            return;
        }
        let Some(req) = self.requests.remove(&tid) else {
            return;
        };
        let f = fam(&from);
        let node = req.node;
        match (code, req.purpose) {
            (
                401,
                Purpose::Announce(op)
                | Purpose::Probe(op)
                | Purpose::Refresh(op)
                | Purpose::Listen(op),
            ) => {
                if let Some(n) = self.tables[f].get_mut(&node) {
                    n.auth_errors += 1;
                    if n.auth_errors > 3 {
                        n.expired = true;
                    }
                }
                // Forget the token and ask the node again.
                let searches = self
                    .ops
                    .get(&op)
                    .map(|o| o.searches.clone())
                    .unwrap_or_default();
                for s in searches {
                    if let Some(s) = self.searches.get_mut(&s) {
                        if let Some(n) = s.nodes.iter_mut().find(|n| n.id == node) {
                            n.token = None;
                            n.replied = None;
                            n.queried = false;
                        }
                        s.done = false;
                    }
                }
                // A refresh that hit a stale token becomes a full put once the node gave a
                // new one.
                let reset_ack = matches!(req.purpose, Purpose::Probe(_) | Purpose::Refresh(_));
                self.clear_peer_pending(op, f, node, reset_ack);
                self.step_ops_of(now, op);
            }
            (_, Purpose::Search(s)) => {
                if let Some(s) = self.searches.get_mut(&s) {
                    if let Some(n) = s.nodes.iter_mut().find(|n| n.id == node) {
                        n.pending = false;
                        n.fail(now);
                    }
                }
            }
            // 404 (no storage for the key) or any other error to a probe or refresh: the
            // node gets the whole value again.
            (_, Purpose::Probe(op) | Purpose::Refresh(op)) => {
                self.send_full_put(now, op, f, node, from);
            }
            (_, Purpose::Announce(op) | Purpose::Listen(op)) => {
                self.clear_peer_pending(op, f, node, false);
            }
            _ => {}
        }
    }

    fn clear_peer_pending(&mut self, op: OpId, f: usize, node: InfoHash, reset_ack: bool) {
        if let Some(o) = self.ops.get_mut(&op) {
            let peers = match &mut o.kind {
                OpKind::Put { peers, .. } | OpKind::Listen { peers, .. } => peers,
                OpKind::Get { .. } => return,
            };
            if let Some(p) = peers.get_mut(&(f, node)) {
                p.pending = false;
                p.last = None;
                if reset_ack {
                    p.acked = false;
                }
            }
        }
    }

    fn on_update(&mut self, now: Instant, a: Args) {
        let Some(sid) = a.sid else { return };
        let Some(&op) = self.sids.get(&sid) else {
            return;
        };
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let OpKind::Listen { query, cache, .. } = &mut o.kind else {
            return;
        };
        let mut new = Vec::new();
        if let Some(WireValues::Values(vs)) = a.values {
            for v in vs {
                if !query.matches(&v) {
                    continue;
                }
                let exp = now + type_expiration(effective_type(&v));
                let changed = cache
                    .get(&v.id)
                    .is_none_or(|(old, _)| !old.same_content(&v));
                let v = Arc::new(v);
                cache.insert(v.id, (v.clone(), exp));
                if changed {
                    new.push(v);
                }
            }
        }
        if let Some(re) = a.re {
            for id in re {
                if let Some((v, e)) = cache.get_mut(&id) {
                    *e = now + type_expiration(effective_type(v));
                }
            }
        }
        let mut gone = Vec::new();
        if let Some(exp) = a.exp {
            for id in exp {
                if let Some((v, _)) = cache.remove(&id) {
                    gone.push(v);
                }
            }
        }
        if !new.is_empty() {
            self.events.push_back(Event::Values { op, values: new });
        }
        if !gone.is_empty() {
            self.events.push_back(Event::Expired { op, values: gone });
        }
    }

    // ----------------------------------------------------------------------------------------
    // Local listeners (ops)

    fn local_listen_values(&mut self, now: Instant, h: &InfoHash, vals: Vec<Arc<Value>>) {
        for (id, o) in &mut self.ops {
            if o.key != *h {
                continue;
            }
            if let OpKind::Listen { query, cache, .. } = &mut o.kind {
                let mut new = Vec::new();
                for v in &vals {
                    if query.matches(v) {
                        let changed = cache.get(&v.id).is_none_or(|(old, _)| !old.same_content(v));
                        cache.insert(v.id, (v.clone(), now + type_expiration(effective_type(v))));
                        if changed {
                            new.push(v.clone());
                        }
                    }
                }
                if !new.is_empty() {
                    self.events.push_back(Event::Values {
                        op: *id,
                        values: new,
                    });
                }
            }
        }
    }

    fn local_listen_expired(&mut self, h: &InfoHash, vals: &[Arc<Value>]) {
        for (id, o) in &mut self.ops {
            if o.key != *h {
                continue;
            }
            if let OpKind::Listen { cache, .. } = &mut o.kind {
                let gone: Vec<Arc<Value>> = vals
                    .iter()
                    .filter_map(|v| cache.remove(&v.id).map(|(c, _)| c))
                    .collect();
                if !gone.is_empty() {
                    self.events.push_back(Event::Expired {
                        op: *id,
                        values: gone,
                    });
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Client operations

    fn families(&self) -> Vec<usize> {
        let mut f = Vec::new();
        if self.cfg.ipv4 {
            f.push(0);
        }
        if self.cfg.ipv6 {
            f.push(1);
        }
        f
    }

    fn new_search(
        &mut self,
        now: Instant,
        target: InfoHash,
        family: usize,
        mode: SearchMode,
    ) -> u64 {
        let id = self.next_search;
        self.next_search += 1;
        self.searches.insert(
            id,
            Search {
                target,
                family,
                mode,
                nodes: vec![],
                done: false,
                waiting: false,
                last_activity: now,
                users: HashSet::new(),
            },
        );
        id
    }

    /// A shared find search for `key` in `family` (used by puts and listens).
    fn find_search(&mut self, now: Instant, key: InfoHash, family: usize, op: OpId) -> u64 {
        let existing = self
            .searches
            .iter()
            .find(|(_, s)| {
                s.target == key
                    && s.family == family
                    && matches!(s.mode, SearchMode::Find)
                    && !s.users.is_empty()
            })
            .map(|(id, _)| *id);
        let id = existing.unwrap_or_else(|| self.new_search(now, key, family, SearchMode::Find));
        if let Some(s) = self.searches.get_mut(&id) {
            s.users.insert(op);
            s.last_activity = now;
        }
        id
    }

    /// Starts a get. Values come as [`Event::Values`], then [`Event::Done`].
    pub fn get(&mut self, now: Instant, key: InfoHash, query: Query) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        let mut searches = Vec::new();
        // Local values first.
        let local: Vec<Arc<Value>> = self.storage.get(&key, &query);
        let mut seen = HashMap::new();
        for v in &local {
            seen.insert(v.id, v.seq);
        }
        if !local.is_empty() {
            self.events.push_back(Event::Values { op, values: local });
        }
        for f in self.families() {
            searches.push(self.new_search(now, key, f, SearchMode::Get(op, query.clone())));
        }
        self.ops.insert(
            op,
            Op {
                key,
                searches,
                kind: OpKind::Get {
                    seen,
                    any_reply: false,
                },
                deadline: Some(now + self.cfg.op_timeout),
            },
        );
        // Only the new op's searches have anything new to do; the others are stepped by
        // their own replies, failures and the maintenance tick.
        self.step_ops_of(now, op);
        op
    }

    /// Starts a put. A value id of 0 is replaced by a random one. [`Event::Done`] tells whether
    /// a node acknowledged it. A permanent put is refreshed until cancelled.
    pub fn put(
        &mut self,
        now: Instant,
        key: InfoHash,
        mut value: Value,
        permanent: bool,
    ) -> (OpId, u64) {
        if value.id == 0 {
            value.id = self.rng.next_u64() | 1;
        }
        let vid = value.id;
        let op = self.next_op;
        self.next_op += 1;
        let mut searches = Vec::new();
        for f in self.families() {
            searches.push(self.find_search(now, key, f, op));
        }
        let created = self.unix(now);
        self.ops.insert(
            op,
            Op {
                key,
                searches,
                kind: OpKind::Put {
                    value: Arc::new(value),
                    permanent,
                    created,
                    peers: HashMap::new(),
                    done: [false; 2],
                    families: [self.cfg.ipv4, self.cfg.ipv6],
                    reported: false,
                },
                deadline: Some(now + self.cfg.op_timeout),
            },
        );
        // A shared search may have other users: stepping it drives them as well, as before.
        self.step_ops_of(now, op);
        (op, vid)
    }

    /// Starts a listen. Values arrive as [`Event::Values`] / [`Event::Expired`] until cancelled.
    pub fn listen(&mut self, now: Instant, key: InfoHash, query: Query) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        let mut searches = Vec::new();
        for f in self.families() {
            searches.push(self.find_search(now, key, f, op));
        }
        let mut cache = HashMap::new();
        let local = self.storage.get(&key, &query);
        for v in &local {
            cache.insert(v.id, (v.clone(), now + type_expiration(effective_type(v))));
        }
        if !local.is_empty() {
            self.events.push_back(Event::Values { op, values: local });
        }
        self.ops.insert(
            op,
            Op {
                key,
                searches,
                kind: OpKind::Listen {
                    query,
                    peers: HashMap::new(),
                    cache,
                },
                deadline: None,
            },
        );
        self.step_ops_of(now, op);
        op
    }

    /// Cancels a get, put (stops refreshing) or listen.
    pub fn cancel(&mut self, _now: Instant, op: OpId) {
        let Some(o) = self.ops.remove(&op) else {
            return;
        };
        for s in o.searches {
            let remove = match self.searches.get_mut(&s) {
                Some(sr) => {
                    sr.users.remove(&op);
                    matches!(sr.mode, SearchMode::Get(..)) || sr.users.is_empty()
                }
                None => false,
            };
            if remove {
                self.searches.remove(&s);
            }
        }
        if let OpKind::Listen { peers, .. } = o.kind {
            for p in peers.values() {
                self.sids.remove(&p.sid);
            }
        }
    }

    /// Ids of running ops (diagnostics).
    pub fn op_count(&self) -> usize {
        self.ops.len()
    }

    // ----------------------------------------------------------------------------------------
    // Searches

    fn step_ops_of(&mut self, now: Instant, op: OpId) {
        let searches = self
            .ops
            .get(&op)
            .map(|o| o.searches.clone())
            .unwrap_or_default();
        for s in searches {
            self.step_search(now, s);
        }
    }

    fn on_search_reply(
        &mut self,
        now: Instant,
        sid: u64,
        a: Args,
        learned: Vec<(InfoHash, SocketAddr)>,
    ) {
        let mut get_values: Option<(OpId, Vec<Value>)> = None;
        {
            let own = self.id;
            let Some(s) = self.searches.get_mut(&sid) else {
                return;
            };
            s.last_activity = now;
            let fam_s = s.family;
            if let Some(n) = s.nodes.iter_mut().find(|n| n.id == a.id) {
                n.pending = false;
                n.replied = Some(now);
                n.token = a.token.clone();
                if a.token.is_none() {
                    n.fail(now); // never use a node that gives no token
                }
            }
            for (id, addr) in learned {
                if fam(&addr) != fam_s || id == own || s.nodes.iter().any(|n| n.id == id) {
                    continue;
                }
                s.nodes.push(SNode::new(id, addr));
            }
            let t = s.target;
            s.nodes.sort_by(|x, y| t.xor_cmp(&x.id, &y.id));
            trim_search_nodes(&mut s.nodes);
            if let SearchMode::Get(op, _) = &s.mode {
                if let Some(WireValues::Values(vs)) = a.values {
                    get_values = Some((*op, vs));
                } else {
                    get_values = Some((*op, vec![]));
                }
            }
        }
        if let Some((op, vs)) = get_values {
            if let Some(Op {
                kind: OpKind::Get {
                    seen, any_reply, ..
                },
                ..
            }) = self.ops.get_mut(&op)
            {
                *any_reply = true;
                let mut new = Vec::new();
                for v in vs {
                    let fresh = seen.get(&v.id).is_none_or(|s| v.seq > *s);
                    if fresh {
                        seen.insert(v.id, v.seq);
                        new.push(Arc::new(v));
                    }
                }
                if !new.is_empty() {
                    self.events.push_back(Event::Values { op, values: new });
                }
            }
        }
        self.step_search(now, sid);
    }

    /// Whether nodes of family `f` may show up: some are known (even expired) or a bootstrap
    /// node of that family is configured. Ops then wait for them instead of failing at once.
    fn expects_nodes(&self, f: usize) -> bool {
        !self.tables[f].is_empty() || self.bootstrap_nodes.iter().any(|a| fam(a) == f)
    }

    fn step_search(&mut self, now: Instant, sid: u64) {
        let own = self.id;
        let Some(family) = self.searches.get(&sid).map(|s| s.family) else {
            return;
        };
        let expects = self.expects_nodes(family);
        let Some(s) = self.searches.get_mut(&sid) else {
            return;
        };
        let table = &self.tables[family];
        // Seed from the routing table; failed nodes that answered us since are tried again.
        let mut revived = Vec::new();
        if s.nodes.iter().filter(|n| !n.failed).count() < SEARCH_NODES {
            for (id, addr) in table.closest_alive(&s.target, SEARCH_NODES) {
                if id == own {
                    continue;
                }
                match s.nodes.iter_mut().find(|n| n.id == id) {
                    None => s.nodes.push(SNode::new(id, addr)),
                    Some(n) => {
                        let answered_since = table
                            .get(&id)
                            .and_then(|t| t.reply_time)
                            .is_some_and(|r| n.failed_at.is_none_or(|f| r > f));
                        if n.failed
                            && !n.pending
                            && answered_since
                            && !self.blacklist.contains(&addr)
                        {
                            *n = SNode::new(id, addr);
                            revived.push(id);
                        }
                    }
                }
            }
            let t = s.target;
            s.nodes.sort_by(|x, y| t.xor_cmp(&x.id, &y.id));
            trim_search_nodes(&mut s.nodes);
        }
        // Nodes whose reply is stale must be asked again.
        for n in &mut s.nodes {
            if !n.pending
                && n.replied
                    .is_some_and(|r| now.saturating_duration_since(r) >= SEARCH_NODE_EXPIRE)
            {
                n.queried = false;
                n.replied = None;
            }
        }
        let mut in_flight = s.nodes.iter().filter(|n| n.pending).count();
        let mut to_send = Vec::new();
        for n in s.nodes.iter_mut().filter(|n| !n.failed).take(SEARCH_NODES) {
            if in_flight >= ALPHA {
                break;
            }
            if !n.queried {
                n.queried = true;
                n.pending = true;
                in_flight += 1;
                to_send.push((n.id, n.addr));
            }
        }
        let (target, mode_get) = (
            s.target,
            match &s.mode {
                SearchMode::Get(_, q) => Some(q.clone()),
                SearchMode::Find => None,
            },
        );
        let want = match family {
            0 => vec![AF_INET],
            _ => vec![AF_INET6],
        };
        // Synced: the closest (up to 8) live nodes all replied. Without any live node the
        // search waits for nodes if some may come (A.14: the reference keeps it alive), else
        // it is over.
        let live: Vec<&SNode> = s
            .nodes
            .iter()
            .filter(|n| !n.failed)
            .take(ANNOUNCE_NODES)
            .collect();
        let synced = !live.is_empty() && live.iter().all(|n| n.replied.is_some());
        let exhausted = in_flight == 0 && s.nodes.iter().filter(|n| !n.failed).all(|n| n.queried);
        // Only searches someone waits on (gets, puts, listens) wait; maintenance lookups end.
        let wanted = matches!(s.mode, SearchMode::Get(..)) || !s.users.is_empty();
        s.waiting = live.is_empty() && expects && wanted;
        let was_done = s.done;
        s.done = synced || (exhausted && !s.waiting);
        let became_done = s.done && !was_done;
        let get_op = match &s.mode {
            SearchMode::Get(op, _) => Some(*op),
            SearchMode::Find => None,
        };
        let users: Vec<OpId> = s.users.iter().copied().collect();
        let ready: Vec<(InfoHash, SocketAddr, Vec<u8>)> = s
            .nodes
            .iter()
            .filter(|n| !n.failed && n.replied.is_some())
            .filter_map(|n| n.token.clone().map(|t| (n.id, n.addr, t)))
            .take(ANNOUNCE_NODES)
            .collect();
        let done_now = s.done;
        for op in &users {
            for id in &revived {
                self.reset_peer(*op, family, id);
            }
        }
        for (id, addr) in to_send {
            let mut a = Args::new(self.id);
            a.want = Some(want.clone());
            let kind = if let Some(q) = &mode_get {
                a.h = Some(target);
                a.query = Some(q.clone());
                QueryKind::Get
            } else {
                a.target = Some(target);
                QueryKind::Find
            };
            if self
                .send_request(now, addr, id, kind, a, Purpose::Search(sid))
                .is_none()
            {
                if let Some(n) = self
                    .searches
                    .get_mut(&sid)
                    .and_then(|s| s.nodes.iter_mut().find(|n| n.id == id))
                {
                    n.pending = false;
                    n.fail(now);
                }
            }
        }
        if let Some(op) = get_op {
            if became_done {
                self.searches.remove(&sid);
            }
            self.check_get_done(op);
            return;
        }
        if !done_now {
            return;
        }
        for op in users {
            self.drive_op(now, op, family, &ready);
        }
        if self.searches.get(&sid).is_some_and(|s| s.users.is_empty()) {
            self.searches.remove(&sid);
        }
    }

    /// A node of `op` came back after failing: it starts over (a put sends it the whole
    /// value, a listen listens again with the same socket id).
    fn reset_peer(&mut self, op: OpId, f: usize, node: &InfoHash) {
        if let Some(p) = self.peer_mut(op, f, node) {
            if !p.pending {
                *p = PeerOpState {
                    sid: p.sid,
                    ..PeerOpState::default()
                };
            }
        }
    }

    /// Ends a get whose searches are all over, or whose remaining searches wait for nodes
    /// while another family already answered.
    fn check_get_done(&mut self, op: OpId) {
        let Some(Op {
            searches,
            kind: OpKind::Get { any_reply, .. },
            ..
        }) = self.ops.get(&op)
        else {
            return;
        };
        let mut left = searches
            .iter()
            .filter_map(|s| self.searches.get(s))
            .peekable();
        let over = left.peek().is_none() || (*any_reply && left.all(|s| s.waiting));
        if over {
            self.finish_get(op);
        }
    }

    fn finish_get(&mut self, op: OpId) {
        if let Some(o) = self.ops.remove(&op) {
            for s in &o.searches {
                self.searches.remove(s);
            }
            let ok = matches!(
                o.kind,
                OpKind::Get {
                    any_reply: true,
                    ..
                }
            );
            self.events.push_back(Event::Done { op, ok });
        }
    }

    /// Search families of `op` that wait for nodes.
    fn waiting_families(&self, op: OpId) -> [bool; 2] {
        let mut w = [false; 2];
        if let Some(o) = self.ops.get(&op) {
            for s in o.searches.iter().filter_map(|s| self.searches.get(s)) {
                w[s.family] |= s.waiting;
            }
        }
        w
    }

    /// Sends announces / listens of `op` to the ready nodes of one family.
    fn drive_op(
        &mut self,
        now: Instant,
        op: OpId,
        family: usize,
        ready: &[(InfoHash, SocketAddr, Vec<u8>)],
    ) {
        let waiting = self.waiting_families(op);
        let unix = self.unix(now);
        let me = self.id;
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let key = o.key;
        let mut sends: Vec<(InfoHash, SocketAddr, Args, QueryKind, Purpose)> = Vec::new();
        let mut finished: Option<bool> = None;
        match &mut o.kind {
            OpKind::Get { .. } => {}
            OpKind::Put {
                value,
                permanent,
                created,
                peers,
                done,
                families,
                reported,
            } => {
                let refresh_after =
                    type_expiration(effective_type(value)).saturating_sub(REFRESH_MARGIN);
                for (id, addr, token) in ready {
                    let p = peers.entry((family, *id)).or_default();
                    if p.pending {
                        continue;
                    }
                    if !p.acked && !p.failed {
                        let a = announce_args(
                            me,
                            key,
                            value,
                            *permanent,
                            *created,
                            unix,
                            token.clone(),
                        );
                        p.pending = true;
                        p.last = Some(now);
                        p.token = Some(token.clone());
                        sends.push((*id, *addr, a, QueryKind::Put, Purpose::Announce(op)));
                    } else if *permanent
                        && p.acked
                        && p.last
                            .is_none_or(|l| now.saturating_duration_since(l) >= refresh_after)
                    {
                        // Keep-alive of a permanent put (A.14): ask the node for our value's id
                        // and seq; the reply decides between `refresh` and a full put.
                        let mut a = Args::new(me);
                        a.h = Some(key);
                        a.query = Some(Query {
                            select: vec![Field::Id, Field::SeqNum],
                            filters: vec![(Field::Id, FieldValue::Int(value.id))],
                        });
                        p.pending = true;
                        p.last = Some(now);
                        p.token = Some(token.clone());
                        sends.push((*id, *addr, a, QueryKind::Get, Purpose::Probe(op)));
                    }
                }
                if !done[family] {
                    let all_settled = ready.iter().all(|r| {
                        peers
                            .get(&(family, r.0))
                            .is_some_and(|p| !p.pending && (p.acked || p.failed))
                    });
                    if all_settled && sends.is_empty() {
                        done[family] = true;
                    }
                }
                // A family that waits for nodes does not hold back a put another family
                // already stored.
                let any_acked = peers.values().any(|p| p.acked);
                let all_done = (0..2).all(|f| !families[f] || done[f] || (waiting[f] && any_acked));
                if all_done && !*reported {
                    *reported = true;
                    finished = Some(any_acked);
                }
            }
            OpKind::Listen { query, peers, .. } => {
                for (id, addr, token) in ready.iter().take(LISTEN_NODES) {
                    let p = peers.entry((family, *id)).or_default();
                    if p.pending {
                        continue;
                    }
                    if p.last
                        .is_some_and(|l| now.saturating_duration_since(l) < LISTEN_REFRESH)
                    {
                        continue;
                    }
                    if p.sid == 0 {
                        p.sid = self.next_sid;
                        self.next_sid = self.next_sid.wrapping_add(1).max(1);
                        self.sids.insert(p.sid, op);
                    }
                    let mut a = Args::new(me);
                    a.ve = Some(1);
                    a.h = Some(key);
                    a.token = Some(token.clone());
                    a.sid = Some(p.sid);
                    if !query.filters.is_empty() {
                        a.query = Some(Query {
                            select: vec![],
                            filters: query.filters.clone(),
                        });
                    }
                    p.pending = true;
                    p.last = Some(now);
                    sends.push((*id, *addr, a, QueryKind::Listen, Purpose::Listen(op)));
                }
            }
        }
        if let Some(ok) = finished {
            self.finish_put(now, op, ok);
        }
        for (id, addr, a, kind, purpose) in sends {
            if self.send_request(now, addr, id, kind, a, purpose).is_none() {
                self.clear_peer_pending(op, family, id, false);
            }
        }
    }

    /// Reports a put's outcome; a plain put ends there, a permanent one keeps refreshing.
    fn finish_put(&mut self, now: Instant, op: OpId, ok: bool) {
        self.events.push_back(Event::Done { op, ok });
        if let Some(Op {
            kind: OpKind::Put {
                permanent: false, ..
            },
            ..
        }) = self.ops.get(&op)
        {
            self.cancel(now, op);
        }
    }

    /// Gets and puts that waited for nodes past their deadline report failure (a put that
    /// some node acknowledged reports success); a permanent put keeps trying.
    fn expire_ops(&mut self, now: Instant) {
        let due: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, o)| o.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for op in due {
            let Some(o) = self.ops.get_mut(&op) else {
                continue;
            };
            o.deadline = None;
            match &mut o.kind {
                OpKind::Get { .. } => self.finish_get(op),
                OpKind::Put {
                    reported, peers, ..
                } => {
                    if !*reported {
                        *reported = true;
                        let ok = peers.values().any(|p| p.acked);
                        self.finish_put(now, op, ok);
                    }
                }
                OpKind::Listen { .. } => {}
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Timers

    /// Handles timers: retransmissions, request failures, expiry, maintenance.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Requests.
        let due: Vec<u32> = self
            .requests
            .iter()
            .filter(|(_, r)| r.next <= now)
            .map(|(t, _)| *t)
            .collect();
        for tid in due {
            let Some(r) = self.requests.get_mut(&tid) else {
                continue;
            };
            if r.attempts < 3 {
                r.attempts += 1;
                let back = if r.attempts == 2 {
                    Duration::from_secs(2)
                } else {
                    Duration::from_secs(4)
                };
                r.next = now + back;
                let (to, packets) = (r.to, r.packets.clone());
                for p in packets {
                    self.transmits.push_back(Transmit {
                        destination: to,
                        socket: None,
                        contents: p,
                    });
                }
            } else if let Some(r) = self.requests.remove(&tid) {
                self.on_request_failed(now, r);
            }
        }
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        self.maintenance(now);
    }

    fn on_request_failed(&mut self, now: Instant, r: Request) {
        let f = fam(&r.to);
        if !r.node.is_zero() {
            self.tables[f].expire(&r.node);
        }
        match r.purpose {
            Purpose::Search(sid) => {
                if let Some(s) = self.searches.get_mut(&sid) {
                    if let Some(n) = s.nodes.iter_mut().find(|n| n.id == r.node) {
                        n.pending = false;
                        n.fail(now);
                    }
                }
                self.step_search(now, sid);
            }
            Purpose::Announce(op)
            | Purpose::Probe(op)
            | Purpose::Refresh(op)
            | Purpose::Listen(op) => {
                let listen = matches!(r.purpose, Purpose::Listen(_));
                if let Some(p) = self.peer_mut(op, f, &r.node) {
                    p.pending = false;
                    if listen {
                        p.last = None;
                    } else {
                        p.failed = true;
                    }
                }
                // The node is dead: drop it from the op's searches so another takes its
                // place (it is tried again if it answers later).
                let searches = self
                    .ops
                    .get(&op)
                    .map(|o| o.searches.clone())
                    .unwrap_or_default();
                for s in searches {
                    if let Some(s) = self.searches.get_mut(&s) {
                        if let Some(n) = s.nodes.iter_mut().find(|n| n.id == r.node) {
                            n.fail(now);
                        }
                    }
                }
                if !listen {
                    self.step_ops_of(now, op);
                }
            }
            Purpose::Ping | Purpose::Update => {}
        }
    }

    fn maintenance(&mut self, now: Instant) {
        // Token secret rotation (15–45 min).
        if now >= self.next_rotate {
            self.old_secret = self.secret;
            self.rng.fill_bytes(&mut self.secret);
            let jitter = u64::from(self.rng.next_u32() % 1800);
            self.next_rotate = now + Duration::from_secs(15 * 60 + jitter);
        }
        // Partial reassemblies.
        self.partials.retain(|_, p| {
            now.saturating_duration_since(p.start) < RX_TIMEOUT
                && now.saturating_duration_since(p.last) < RX_FRAGMENT_TIMEOUT
        });
        // Storage expiry.
        let removed = self.storage.expire(now);
        self.notify_removed(now, removed);
        // Listen caches expire locally unless refreshed.
        let mut expired_events = Vec::new();
        for (id, o) in &mut self.ops {
            if let OpKind::Listen { cache, .. } = &mut o.kind {
                let mut gone = Vec::new();
                cache.retain(|_, (v, e)| {
                    if *e <= now {
                        gone.push(v.clone());
                        false
                    } else {
                        true
                    }
                });
                if !gone.is_empty() {
                    expired_events.push(Event::Expired {
                        op: *id,
                        values: gone,
                    });
                }
            }
        }
        self.events.extend(expired_events);
        // Bootstrap while disconnected.
        let connected = [
            self.tables[0].counts(now).good > 0,
            self.tables[1].counts(now).good > 0,
        ];
        if !connected[0]
            && !connected[1]
            && !self.bootstrap_nodes.is_empty()
            && now >= self.next_bootstrap
        {
            for addr in self.bootstrap_nodes.clone() {
                self.send_request(
                    now,
                    addr,
                    InfoHash::ZERO,
                    QueryKind::Ping,
                    Args::new(self.id),
                    Purpose::Ping,
                );
            }
            self.next_bootstrap = now + self.bootstrap_period;
            self.bootstrap_period = (self.bootstrap_period * 2).min(BOOTSTRAP_MAX);
        }
        #[allow(clippy::needless_range_loop)] // f indexes three parallel arrays
        for f in 0..2 {
            if connected[f] && !self.was_connected[f] {
                // Just connected: look ourselves up to fill the table.
                self.bootstrap_period = BOOTSTRAP_FIRST;
                let id = self.new_search(now, self.id, f, SearchMode::Find);
                self.step_search(now, id);
            }
            self.was_connected[f] = connected[f];
            // No good node: ping expired ones again (10 s, doubling to 10 min). A node that
            // rate-limited us or a short outage must not leave us without nodes for good; as
            // the reference does on lost connectivity, they get another chance.
            if connected[f] {
                self.next_recheck[f] = now;
                self.recheck_period[f] = RECHECK_FIRST;
            } else if now >= self.next_recheck[f] {
                for (id, addr) in self.tables[f].expired_to_ping(RECHECK_NODES) {
                    self.send_request(
                        now,
                        addr,
                        id,
                        QueryKind::Ping,
                        Args::new(self.id),
                        Purpose::Ping,
                    );
                }
                self.next_recheck[f] = now + self.recheck_period[f];
                self.recheck_period[f] = (self.recheck_period[f] * 2).min(RECHECK_MAX);
            }
            // Bucket refresh.
            if connected[f] {
                let stale = self.tables[f].stale_buckets(now, BUCKET_IDLE, &mut *self.rng);
                for target in stale.into_iter().take(4) {
                    let id = self.new_search(now, target, f, SearchMode::Find);
                    self.step_search(now, id);
                }
            }
            // Sparse buckets: ask a random known node for nodes in them.
            if connected[f] {
                let sparse =
                    self.tables[f].sparse_buckets(now, Duration::from_secs(30), &mut *self.rng);
                for target in sparse.into_iter().take(2) {
                    if let Some((id, addr)) = self.tables[f].random_node(&mut *self.rng) {
                        let mut a = Args::new(self.id);
                        a.target = Some(target);
                        a.want = Some(vec![if f == 0 { AF_INET } else { AF_INET6 }]);
                        self.send_request(now, addr, id, QueryKind::Find, a, Purpose::Ping);
                    }
                }
            }
            // Liveness pings.
            for (id, addr) in self.tables[f].dubious_to_ping(now, 8) {
                self.send_request(
                    now,
                    addr,
                    id,
                    QueryKind::Ping,
                    Args::new(self.id),
                    Purpose::Ping,
                );
            }
        }
        // Searches: step, refresh listens and permanent puts, drop idle ones.
        let ids: Vec<u64> = self.searches.keys().copied().collect();
        for id in ids {
            let drop = self.searches.get(&id).is_some_and(|s| {
                s.users.is_empty()
                    && matches!(s.mode, SearchMode::Find)
                    && (s.done || now.saturating_duration_since(s.last_activity) >= SEARCH_EXPIRE)
            });
            if drop {
                self.searches.remove(&id);
                continue;
            }
            self.step_search(now, id);
        }
        self.expire_ops(now);
        // Per-IP rate counters are reset by the window itself; prune stale blacklist entries? (kept until restart)
    }
}

/// Arguments of a full `put` of `value` (creation time only for plain puts made earlier).
fn announce_args(
    me: InfoHash,
    key: InfoHash,
    value: &Value,
    permanent: bool,
    created: u64,
    now_unix: u64,
    token: Vec<u8>,
) -> Args {
    let mut a = Args::new(me);
    a.h = Some(key);
    a.values = Some(WireValues::Values(vec![value.clone()]));
    if !permanent && created < now_unix {
        a.created = Some(created);
    }
    a.token = Some(token);
    a
}

fn trim_search_nodes(nodes: &mut Vec<SNode>) {
    // Keep the 14 closest live nodes plus anything in flight or already failed among them.
    let mut live = 0;
    nodes.retain(|n| {
        if n.pending {
            return true;
        }
        if n.failed {
            return live < SEARCH_NODES;
        }
        live += 1;
        live <= SEARCH_NODES
    });
}

/// Maps IPv4-mapped IPv6 addresses to IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}
