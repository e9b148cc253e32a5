//! The TURN server core: authentication, allocations, permissions, channels, RFC 6062 state.
//!
//! Request handling is synchronous (it never awaits): the UDP shards and the stream tasks call
//! [`Server::handle_stun`] and send what it writes into their reusable buffer. The only
//! asynchronous control-plane work (RFC 6062 Connect) runs in its own task.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use waypost_protocol::stun::auth::{self, NonceCheck, NonceKey, canonical_ip};
use waypost_protocol::stun::{Class, Message, MessageWriter, attr, channel, method};

use crate::config::Settings;
use crate::metrics::{Direction, Metrics, Refusal, Relay, Transport};

/// Default allocation lifetime (RFC 8656).
const DEFAULT_LIFETIME: u32 = 600;
/// Permission lifetime.
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime.
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long an RFC 6062 peer connection waits for its ConnectionBind.
const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// Maximum RFC 6062 data connections per allocation.
const MAX_TCP_CONNECTIONS: u32 = 64;
/// Room kept in front of relayed payloads for a ChannelData header or Data indication framing.
pub(crate) const HEADROOM: usize = 64;

/// An allocation's key: the client's 5-tuple.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FiveTuple {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub transport: Transport,
}

/// Sends a datagram right away on a non-blocking socket. Unlike `UdpSocket::try_send_to`, this
/// does not wait for the reactor to have seen the socket writable once (a fresh relay socket on
/// a busy current-thread shard may not have been polled yet). Returns whether it was sent.
pub(crate) fn udp_send(sock: &Udp, data: &[u8], to: SocketAddr) -> bool {
    socket2::SockRef::from(sock.get_ref())
        .send_to(data, &to.into())
        .is_ok()
}

/// A non-blocking UDP socket registered with the current shard's reactor. Readiness is managed
/// by hand so that a short batch clears it without the extra `EAGAIN` receive call.
pub(crate) type Udp = tokio::io::unix::AsyncFd<std::net::UdpSocket>;

/// Turns off the DF bit that quinn-udp's socket setup enables: RFC 8656 relays without DF unless
/// the client asked for DONT-FRAGMENT, so a relayed datagram that grows past the path MTU (Data
/// indication framing) is fragmented rather than dropped.
pub(crate) fn allow_fragmentation(sock: &std::net::UdpSocket) {
    use rustix::net::sockopt;
    let _ = if sock.local_addr().is_ok_and(|a| a.is_ipv6()) {
        sockopt::set_ipv6_mtu_discover(sock, sockopt::Ipv6PathMtuDiscovery::DONT)
    } else {
        sockopt::set_ip_mtu_discover(sock, sockopt::Ipv4PathMtuDiscovery::DONT)
    };
}

/// Registers a UDP socket with the current runtime's reactor.
pub(crate) fn register_udp(sock: std::net::UdpSocket) -> std::io::Result<Udp> {
    // `AsyncFd::new` is deprecated because a generic `T: AsRawFd` may change or close its fd;
    // `std::net::UdpSocket` owns its fd for its whole life, which is the condition the safe
    // replacement (`unsafe fn register`) asks callers to uphold. This crate forbids `unsafe`.
    // Read interest only: the data path never waits for writability (a full socket buffer drops
    // the datagram, as UDP may), and write interest would wake the shard after every send.
    #[allow(deprecated)]
    tokio::io::unix::AsyncFd::with_interest(sock, tokio::io::Interest::READABLE)
}

/// Datagrams per relay receive batch.
const RELAY_BATCH: usize = 8;
/// One relay receive slot: headroom for in-place ChannelData framing, then a datagram (or a GRO
/// train of datagrams).
const RELAY_SLOT: usize = HEADROOM + 65536;

thread_local! {
    /// The relay receive buffer of this shard thread, shared by all its relay tasks: it is only
    /// borrowed between a readiness wake-up and the end of processing, never across an await.
    static RELAY_BUF: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0u8; RELAY_BATCH * RELAY_SLOT]);
    static RELAY_OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(2048));
}

/// How to reach a client.
#[derive(Clone)]
pub(crate) enum Sink {
    /// Through a UDP listener socket.
    Udp(Arc<Udp>, SocketAddr),
    /// Through a stream connection's writer queue.
    Stream(mpsc::Sender<Bytes>),
}

impl Sink {
    /// Sends one datagram or frame; drops it if the client cannot keep up (UDP semantics).
    pub(crate) fn send(&self, data: &[u8]) {
        match self {
            Self::Udp(sock, to) => {
                udp_send(sock, data, *to);
            }
            Self::Stream(tx) => {
                let _ = tx.try_send(Bytes::copy_from_slice(data));
            }
        }
    }

    /// Sends relayed data towards the client and counts `payload` bytes as relayed. On a shard
    /// thread a UDP datagram is queued in the shard's outbox (sent before the shard parks).
    pub(crate) fn relay(&self, metrics: &Metrics, data: &[u8], payload: usize) {
        match self {
            Self::Udp(sock, to) => {
                crate::outbox::send(metrics, sock, *to, data, payload, Direction::ToClient);
            }
            Self::Stream(tx) => {
                if tx.try_send(Bytes::copy_from_slice(data)).is_ok() {
                    crate::outbox::count(metrics, Direction::ToClient, payload);
                }
            }
        }
    }

    fn is_stream(&self) -> bool {
        matches!(self, Self::Stream(_))
    }
}

/// The relay side of an allocation.
pub(crate) enum RelayKind {
    Udp(Arc<Udp>, quinn_udp::UdpSocketState),
    Tcp,
}

#[derive(Default)]
struct AllocState {
    expires: Option<Instant>,
    perms: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
    tcp_conns: u32,
}

impl AllocState {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.get(&canonical_ip(ip)).is_some_and(|&e| e > now)
    }
}

/// One allocation.
pub(crate) struct Allocation {
    pub tuple: FiveTuple,
    pub sink: Sink,
    pub relay_addr: SocketAddr,
    pub relay: RelayKind,
    username: Vec<u8>,
    ip_key: IpAddr,
    alloc_tid: [u8; 12],
    lifetime_at_alloc: u32,
    state: Mutex<AllocState>,
    pub cancel: CancellationToken,
    /// Set when the allocation is removed (a lock-free check for the shards' caches).
    pub removed: std::sync::atomic::AtomicBool,
}

/// A TCP/TLS connection's place in the per-IP connection quota, released on drop.
pub(crate) struct ConnSlot {
    server: Arc<Server>,
    key: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut map = self.server.conns_per_ip.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// An RFC 6062 peer connection waiting for ConnectionBind.
struct Pending {
    stream: Option<TcpStream>,
    owner: FiveTuple,
    username: Vec<u8>,
    created: Instant,
}

/// What the caller must do after a request was handled.
pub(crate) enum Action {
    /// Send `out` (if non-empty) and carry on.
    Reply,
    /// Send `out`, then pipe this stream to the given peer connection (RFC 6062 ConnectionBind)
    /// owned by the allocation of the given 5-tuple.
    Bind(TcpStream, FiveTuple, CancellationToken),
}

/// Per-source-IP counters in a fixed table, so unauthenticated traffic cannot grow memory.
struct RateTable {
    slots: Vec<Mutex<(u64, u32)>>,
}

impl RateTable {
    fn new(n: usize) -> Self {
        Self {
            slots: (0..n).map(|_| Mutex::new((0, 0))).collect(),
        }
    }

    /// Counts one event for `ip` in the current second; false once `limit` is exceeded.
    fn allow(&self, ip: IpAddr, now_s: u64, limit: u32) -> bool {
        let h = match ip {
            IpAddr::V4(v) => u64::from(u32::from(v)),
            IpAddr::V6(v) => (u128::from(v) >> 64) as u64,
        };
        let idx = usize::try_from(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52).unwrap_or(0)
            % self.slots.len();
        let mut s = self.slots[idx].lock();
        if s.0 != now_s {
            *s = (now_s, 0);
        }
        s.1 += 1;
        s.1 <= limit
    }
}

/// Per-IP bandwidth limiter: a per-second byte budget (0 = unlimited).
struct ByteBudget {
    second: AtomicU64,
    used: AtomicU64,
}

/// The server state shared by all tasks.
pub(crate) struct Server {
    pub s: Settings,
    pub metrics: Metrics,
    /// Cancelled when the server stops (after the drain).
    pub stop: CancellationToken,
    /// Set while draining: new allocations are refused with 508.
    pub draining: std::sync::atomic::AtomicBool,
    nonce: NonceKey,
    allocs: RwLock<HashMap<FiveTuple, Arc<Allocation>>>,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    conns_per_ip: Mutex<HashMap<IpAddr, u32>>,
    budgets: RwLock<HashMap<IpAddr, Arc<ByteBudget>>>,
    unauth: RateTable,
    pending: Mutex<HashMap<u32, Pending>>,
    removals: AtomicU64,
    next_port: AtomicU32,
    start: Instant,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Quota key: the IPv4 address, or the /64 of an IPv6 address.
fn ip_key(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Credentials that passed authentication.
struct Authed {
    key: [u8; 16],
    username: Vec<u8>,
    sha256: bool,
    fingerprint: bool,
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    canonical_ip(a).is_ipv4() == canonical_ip(b).is_ipv4()
}

fn known_attr(t: u16) -> bool {
    matches!(
        t,
        attr::MAPPED_ADDRESS
            | attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::ERROR_CODE
            | attr::UNKNOWN_ATTRIBUTES
            | attr::CHANNEL_NUMBER
            | attr::LIFETIME
            | attr::XOR_PEER_ADDRESS
            | attr::DATA
            | attr::REALM
            | attr::NONCE
            | attr::XOR_RELAYED_ADDRESS
            | attr::REQUESTED_ADDRESS_FAMILY
            | attr::EVEN_PORT
            | attr::REQUESTED_TRANSPORT
            | attr::DONT_FRAGMENT
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::PASSWORD_ALGORITHM
            | attr::USERHASH
            | attr::XOR_MAPPED_ADDRESS
            | attr::RESERVATION_TOKEN
            | attr::PRIORITY
            | attr::USE_CANDIDATE
            | attr::CONNECTION_ID
    )
}

impl Server {
    pub(crate) fn new(s: Settings, metrics: Metrics, stop: CancellationToken) -> Arc<Self> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let span = u32::from(s.ports.1 - s.ports.0) + 1;
        let first = rand::rng().next_u32() % span;
        Arc::new(Self {
            s,
            metrics,
            stop,
            draining: std::sync::atomic::AtomicBool::new(false),
            nonce: NonceKey::new(secret),
            allocs: RwLock::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            conns_per_ip: Mutex::new(HashMap::new()),
            budgets: RwLock::new(HashMap::new()),
            unauth: RateTable::new(4096),
            pending: Mutex::new(HashMap::new()),
            removals: AtomicU64::new(0),
            next_port: AtomicU32::new(first),
            start: Instant::now(),
        })
    }

    /// Takes a TCP/TLS connection slot for `ip`, or `None` over the per-IP limit.
    pub(crate) fn connection_slot(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let key = ip_key(ip);
        let mut map = self.conns_per_ip.lock();
        let n = map.entry(key).or_insert(0);
        if *n >= self.s.max_connections_per_ip {
            drop(map);
            self.metrics.refused(Refusal::Quota);
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            server: self.clone(),
            key,
        })
    }

    /// Live allocations (for tests and drain).
    pub(crate) fn allocation_count(&self) -> usize {
        self.allocs.read().len()
    }

    // ----- data plane -----------------------------------------------------------------------

    /// Spends `n` bytes of `ip`'s per-second budget; false if over the limit.
    fn spend(&self, ip: IpAddr, n: usize) -> bool {
        let limit = self.s.max_bps_per_ip;
        if limit == 0 {
            return true;
        }
        let key = ip_key(ip);
        let now_s = self.start.elapsed().as_secs();
        let b = {
            let map = self.budgets.read();
            map.get(&key).cloned()
        };
        let b = match b {
            Some(b) => b,
            None => {
                let mut map = self.budgets.write();
                map.entry(key)
                    .or_insert_with(|| {
                        Arc::new(ByteBudget {
                            second: AtomicU64::new(now_s),
                            used: AtomicU64::new(0),
                        })
                    })
                    .clone()
            }
        };
        if b.second.swap(now_s, Ordering::Relaxed) != now_s {
            b.used.store(0, Ordering::Relaxed);
        }
        b.used.fetch_add(n as u64, Ordering::Relaxed) + n as u64 <= limit
    }

    /// The allocation of a 5-tuple, if any.
    pub(crate) fn allocation(&self, tuple: &FiveTuple) -> Option<Arc<Allocation>> {
        self.allocs.read().get(tuple).cloned()
    }

    /// How many allocations were removed so far (shard caches compare it to drop theirs).
    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(Ordering::Relaxed)
    }

    /// ChannelData from the client of allocation `a`.
    pub(crate) fn channel_data_on(&self, a: &Allocation, ch: u16, payload: &[u8]) {
        let RelayKind::Udp(sock, _) = &a.relay else {
            return;
        };
        let now = Instant::now();
        let peer = {
            let st = a.state.lock();
            match st.channels.get(&ch) {
                Some(&(peer, exp)) if exp > now && st.permitted(peer.ip(), now) => peer,
                _ => return,
            }
        };
        if !self.spend(a.tuple.client.ip(), payload.len()) {
            return;
        }
        crate::outbox::send(
            &self.metrics,
            sock,
            peer,
            payload,
            payload.len(),
            Direction::ToPeer,
        );
    }

    /// A Send indication from a client.
    fn send_indication(&self, tuple: &FiveTuple, msg: &Message<'_>) {
        let allocs = self.allocs.read();
        if let Some(a) = allocs.get(tuple) {
            self.send_indication_on(a, msg);
        }
    }

    /// A Send indication from the client of allocation `a`.
    pub(crate) fn send_indication_on(&self, a: &Allocation, msg: &Message<'_>) {
        let (Some(peer), Some(data)) = (msg.xor_addr(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            return;
        };
        let RelayKind::Udp(sock, _) = &a.relay else {
            return;
        };
        if !a.state.lock().permitted(peer.ip(), Instant::now())
            || !self.spend(a.tuple.client.ip(), data.len())
        {
            return;
        }
        crate::outbox::send(
            &self.metrics,
            sock,
            peer,
            data,
            data.len(),
            Direction::ToPeer,
        );
    }

    /// The UDP relay loop of one allocation: peer datagrams back to the client.
    async fn udp_relay(self: Arc<Self>, a: Arc<Allocation>) {
        let RelayKind::Udp(sock, state) = &a.relay else {
            return;
        };
        let cancelled = a.cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            let mut guard = tokio::select! {
                biased;
                () = &mut cancelled => return,
                g = sock.readable() => match g { Ok(g) => g, Err(_) => return },
            };
            let drained = RELAY_BUF.with_borrow_mut(|store| {
                let mut metas = [quinn_udp::RecvMeta::default(); RELAY_BATCH];
                let r = {
                    let mut it = store.chunks_mut(RELAY_SLOT);
                    let mut slices: [std::io::IoSliceMut<'_>; RELAY_BATCH] =
                        std::array::from_fn(|_| {
                            std::io::IoSliceMut::new(
                                it.next().map_or(&mut [][..], |c| &mut c[HEADROOM..]),
                            )
                        });
                    state.recv(
                        quinn_udp::UdpSockRef::from(sock.get_ref()),
                        &mut slices,
                        &mut metas,
                    )
                };
                match r {
                    Ok(n) => {
                        for (i, meta) in metas.iter().enumerate().take(n) {
                            let slot = &mut store[i * RELAY_SLOT..(i + 1) * RELAY_SLOT];
                            let len = meta.len.min(RELAY_SLOT - HEADROOM);
                            let stride = meta.stride.max(1);
                            let mut off = 0;
                            while off < len {
                                let seg = stride.min(len - off);
                                self.relay_to_client(
                                    &a,
                                    meta.addr,
                                    &mut slot[off..HEADROOM + off + seg],
                                );
                                off += seg;
                            }
                        }
                        n < RELAY_BATCH
                    }
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
            });
            if drained {
                guard.clear_ready();
            }
        }
    }

    /// Relays one peer datagram (`buf[HEADROOM..]`, with `HEADROOM` bytes of scratch in front).
    fn relay_to_client(&self, a: &Allocation, peer: SocketAddr, buf: &mut [u8]) {
        let n = buf.len() - HEADROOM;
        let now = Instant::now();
        let ch = {
            let st = a.state.lock();
            if !st.permitted(peer.ip(), now) {
                return;
            }
            st.by_peer
                .get(&peer)
                .copied()
                .filter(|c| st.channels.get(c).is_some_and(|&(_, e)| e > now))
        };
        if !self.spend(a.tuple.client.ip(), n) {
            return;
        }
        match (ch, a.sink.is_stream()) {
            (Some(ch), false) => {
                // In place: the header goes into the headroom, no copy.
                buf[HEADROOM - 4..HEADROOM].copy_from_slice(&channel::header(ch, n));
                a.sink.relay(&self.metrics, &buf[HEADROOM - 4..], n);
            }
            (Some(ch), true) => RELAY_OUT.with_borrow_mut(|out| {
                out.clear();
                out.extend_from_slice(&channel::header(ch, n));
                out.extend_from_slice(&buf[HEADROOM..]);
                out.resize(out.len() + channel::stream_padding(n), 0);
                a.sink.relay(&self.metrics, out, n);
            }),
            (None, _) => RELAY_OUT.with_borrow_mut(|out| {
                out.clear();
                let mut tid = [0u8; 12];
                rand::rng().fill_bytes(&mut tid);
                let mut w = MessageWriter::new(out, method::DATA, Class::Indication, &tid);
                w.xor_addr(attr::XOR_PEER_ADDRESS, peer)
                    .attr(attr::DATA, &buf[HEADROOM..]);
                w.finish();
                a.sink.relay(&self.metrics, out, n);
            }),
        }
    }

    // ----- control plane --------------------------------------------------------------------

    fn write_error(&self, out: &mut Vec<u8>, msg: &Message<'_>, code: u16, udp: bool) {
        let mut w = MessageWriter::new(out, msg.method(), Class::Error, &msg.transaction_id());
        if udp {
            // Minimal before authentication: no reason phrase, no fingerprint.
            w.attr(
                attr::ERROR_CODE,
                &[
                    0,
                    0,
                    u8::try_from(code / 100).unwrap_or(4),
                    u8::try_from(code % 100).unwrap_or(0),
                ],
            );
        } else {
            w.error_code(code);
        }
        w.finish();
    }

    /// A 401 or 438 with REALM and a fresh NONCE, rate limited per source IP.
    fn challenge(
        &self,
        out: &mut Vec<u8>,
        msg: &Message<'_>,
        code: u16,
        client: SocketAddr,
        udp: bool,
    ) {
        let now = unix_now();
        if !self
            .unauth
            .allow(ip_key(client.ip()), now, self.s.unauth_rate)
        {
            self.metrics.refused(Refusal::RateLimited);
            return;
        }
        self.metrics.refused(if code == 438 {
            Refusal::StaleNonce
        } else {
            Refusal::Unauthorized
        });
        let nonce = self.nonce.issue(now, client.ip());
        let mut w = MessageWriter::new(out, msg.method(), Class::Error, &msg.transaction_id());
        if udp {
            w.attr(
                attr::ERROR_CODE,
                &[
                    0,
                    0,
                    u8::try_from(code / 100).unwrap_or(4),
                    u8::try_from(code % 100).unwrap_or(0),
                ],
            );
        } else {
            w.error_code(code);
        }
        w.attr(attr::REALM, self.s.realm.as_bytes())
            .attr(attr::NONCE, &nonce);
        w.finish();
    }

    /// Long-term authentication. On failure the answer is already in `out`.
    fn authenticate(
        &self,
        msg: &Message<'_>,
        client: SocketAddr,
        udp: bool,
        out: &mut Vec<u8>,
    ) -> Option<Authed> {
        let sha256 = msg.has_integrity_sha256() && !msg.has_integrity();
        if !msg.has_integrity() && !msg.has_integrity_sha256() {
            self.challenge(out, msg, 401, client, udp);
            return None;
        }
        let (Some(user), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            self.write_error(out, msg, 400, udp);
            return None;
        };
        match self.nonce.check(
            nonce,
            unix_now(),
            client.ip(),
            u64::from(self.s.nonce_lifetime),
        ) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                self.challenge(out, msg, 438, client, udp);
                return None;
            }
            NonceCheck::Invalid => {
                self.challenge(out, msg, 401, client, udp);
                return None;
            }
        }
        let verify = |key: &[u8]| {
            if sha256 {
                msg.verify_integrity_sha256(key)
            } else {
                msg.verify_integrity(key)
            }
        };
        let mut found = None;
        if realm == self.s.realm.as_bytes() {
            if let Some(u) = self.s.users.iter().find(|u| u.name.as_bytes() == user)
                && verify(&u.key)
            {
                found = Some(u.key);
            }
            if found.is_none()
                && !self.s.secrets.is_empty()
                && let Some(expiry) = auth::rest_expiry(user)
                && expiry >= unix_now()
            {
                for secret in &self.s.secrets {
                    let pass = auth::rest_password(secret, user);
                    let key = auth::long_term_key(user, realm, pass.as_bytes());
                    if verify(&key) {
                        found = Some(key);
                        break;
                    }
                }
            }
        }
        let Some(key) = found else {
            self.challenge(out, msg, 401, client, udp);
            return None;
        };
        Some(Authed {
            key,
            username: user.to_vec(),
            sha256,
            fingerprint: msg.has_fingerprint(),
        })
    }

    fn finish_authed(w: &mut MessageWriter<'_>, a: &Authed) {
        if a.sha256 {
            w.integrity_sha256(&a.key);
        } else {
            w.integrity(&a.key);
        }
        if a.fingerprint {
            w.fingerprint();
        }
    }

    fn authed_error(out: &mut Vec<u8>, msg: &Message<'_>, code: u16, a: &Authed) {
        let mut w = MessageWriter::new(out, msg.method(), Class::Error, &msg.transaction_id());
        w.error_code(code);
        Self::finish_authed(&mut w, a);
        w.finish();
    }

    /// Handles one STUN message from a client. Responses are appended to `out`.
    pub(crate) fn handle_stun(
        self: &Arc<Self>,
        msg: &Message<'_>,
        tuple: FiveTuple,
        sink: &Sink,
        out: &mut Vec<u8>,
    ) -> Action {
        let udp = tuple.transport == Transport::Udp;
        match msg.class() {
            Class::Indication => {
                if msg.method() == method::SEND {
                    self.send_indication(&tuple, msg);
                }
                return Action::Reply;
            }
            Class::Success | Class::Error => return Action::Reply,
            Class::Request => {}
        }
        if msg.method() == method::BINDING {
            let mut w =
                MessageWriter::new(out, method::BINDING, Class::Success, &msg.transaction_id());
            w.xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client);
            if msg.has_fingerprint() {
                w.fingerprint();
            }
            w.finish();
            return Action::Reply;
        }
        if !matches!(
            msg.method(),
            method::ALLOCATE
                | method::REFRESH
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND
                | method::CONNECT
                | method::CONNECTION_BIND
        ) {
            self.write_error(out, msg, 400, udp);
            return Action::Reply;
        }
        let Some(auth) = self.authenticate(msg, tuple.client, udp, out) else {
            return Action::Reply;
        };
        if let Some(unknown) = msg.unknown_required(known_attr) {
            let mut w = MessageWriter::new(out, msg.method(), Class::Error, &msg.transaction_id());
            w.error_code(420)
                .attr(attr::UNKNOWN_ATTRIBUTES, &unknown.to_be_bytes());
            Self::finish_authed(&mut w, &auth);
            w.finish();
            return Action::Reply;
        }
        match msg.method() {
            method::ALLOCATE => self.allocate(msg, tuple, sink, &auth, out),
            method::CONNECTION_BIND => return self.connection_bind(msg, tuple, &auth, out),
            m => {
                let alloc = self.allocs.read().get(&tuple).cloned();
                let Some(alloc) = alloc else {
                    Self::authed_error(out, msg, 437, &auth);
                    return Action::Reply;
                };
                if alloc.username != auth.username {
                    Self::authed_error(out, msg, 441, &auth);
                    return Action::Reply;
                }
                match m {
                    method::REFRESH => self.refresh(msg, &alloc, &auth, out),
                    method::CREATE_PERMISSION => self.create_permission(msg, &alloc, &auth, out),
                    method::CHANNEL_BIND => self.channel_bind(msg, &alloc, &auth, out),
                    _ => self.connect(msg, &alloc, auth, out),
                }
            }
        }
        Action::Reply
    }

    fn lifetime(&self, msg: &Message<'_>, default: u32) -> u32 {
        match msg.get(attr::LIFETIME).and_then(attr::decode_u32) {
            Some(0) => 0,
            Some(l) => l.clamp(
                DEFAULT_LIFETIME.min(self.s.max_lifetime),
                self.s.max_lifetime,
            ),
            None => default.min(self.s.max_lifetime),
        }
    }

    fn success(
        &self,
        out: &mut Vec<u8>,
        msg: &Message<'_>,
        auth: &Authed,
        f: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        let mut w = MessageWriter::new(out, msg.method(), Class::Success, &msg.transaction_id());
        f(&mut w);
        if !self.s.software.is_empty() {
            w.attr(attr::SOFTWARE, self.s.software.as_bytes());
        }
        Self::finish_authed(&mut w, auth);
        w.finish();
    }

    fn allocate(
        self: &Arc<Self>,
        msg: &Message<'_>,
        tuple: FiveTuple,
        sink: &Sink,
        auth: &Authed,
        out: &mut Vec<u8>,
    ) {
        if let Some(existing) = self.allocs.read().get(&tuple).cloned() {
            if existing.alloc_tid == msg.transaction_id() && existing.username == auth.username {
                // Retransmission: answer again.
                self.success(out, msg, auth, |w| {
                    w.xor_addr(attr::XOR_RELAYED_ADDRESS, existing.relay_addr)
                        .attr_u32(attr::LIFETIME, existing.lifetime_at_alloc)
                        .xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client);
                });
            } else {
                Self::authed_error(out, msg, 437, auth);
            }
            return;
        }
        let relay = match msg.get(attr::REQUESTED_TRANSPORT) {
            Some([attr::TRANSPORT_UDP, ..]) => Relay::Udp,
            Some([attr::TRANSPORT_TCP, ..]) if tuple.transport != Transport::Udp => Relay::Tcp,
            Some([attr::TRANSPORT_TCP, ..]) => return Self::authed_error(out, msg, 400, auth),
            Some(_) => return Self::authed_error(out, msg, 442, auth),
            None => return Self::authed_error(out, msg, 400, auth),
        };
        if relay == Relay::Tcp
            && (msg.get(attr::EVEN_PORT).is_some() || msg.get(attr::RESERVATION_TOKEN).is_some())
        {
            return Self::authed_error(out, msg, 400, auth);
        }
        if msg.get(attr::RESERVATION_TOKEN).is_some() {
            return Self::authed_error(out, msg, 508, auth);
        }
        let relay_ip = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            Some([attr::FAMILY_V4, ..]) => self.s.relay_v4,
            Some([attr::FAMILY_V6, ..]) => self.s.relay_v6,
            Some(_) => return Self::authed_error(out, msg, 440, auth),
            None => self.s.relay_v4.or(self.s.relay_v6),
        };
        let Some(relay_ip) = relay_ip else {
            return Self::authed_error(out, msg, 440, auth);
        };
        let lifetime = self.lifetime(msg, DEFAULT_LIFETIME);
        let lifetime = if lifetime == 0 {
            DEFAULT_LIFETIME.min(self.s.max_lifetime)
        } else {
            lifetime
        };
        if self.draining.load(Ordering::Relaxed) {
            return Self::authed_error(out, msg, 508, auth);
        }
        let key_ip = ip_key(tuple.client.ip());
        {
            let total = self.allocs.read().len();
            let mut per_ip = self.per_ip.lock();
            let n = per_ip.entry(key_ip).or_insert(0);
            if *n >= self.s.max_allocations_per_ip || total >= self.s.max_allocations as usize {
                if *n == 0 {
                    per_ip.remove(&key_ip);
                }
                drop(per_ip);
                self.metrics.refused(Refusal::Quota);
                return Self::authed_error(out, msg, 486, auth);
            }
            *n += 1;
        }
        let even = msg.get(attr::EVEN_PORT).is_some();
        let bound = match relay {
            Relay::Udp => self
                .bind_udp_relay(relay_ip, even)
                .map(|(k, a)| (k, a, None)),
            Relay::Tcp => self
                .bind_tcp_relay(relay_ip)
                .map(|(l, a)| (RelayKind::Tcp, a, Some(l))),
        };
        let Some((kind, relay_addr, listener)) = bound else {
            self.release_ip(key_ip);
            return Self::authed_error(out, msg, 508, auth);
        };
        let a = Arc::new(Allocation {
            tuple,
            sink: sink.clone(),
            relay_addr,
            relay: kind,
            username: auth.username.clone(),
            ip_key: key_ip,
            alloc_tid: msg.transaction_id(),
            lifetime_at_alloc: lifetime,
            state: Mutex::new(AllocState {
                expires: Some(Instant::now() + Duration::from_secs(u64::from(lifetime))),
                ..AllocState::default()
            }),
            cancel: self.stop.child_token(),
            removed: std::sync::atomic::AtomicBool::new(false),
        });
        self.allocs.write().insert(tuple, a.clone());
        self.metrics.allocation_opened(relay);
        match (&a.relay, listener) {
            (RelayKind::Udp(..), _) => {
                tokio::spawn(self.clone().udp_relay(a.clone()));
            }
            (RelayKind::Tcp, Some(l)) => {
                tokio::spawn(self.clone().tcp_relay_accept(a.clone(), l));
            }
            (RelayKind::Tcp, None) => {}
        }
        self.success(out, msg, auth, |w| {
            w.xor_addr(attr::XOR_RELAYED_ADDRESS, relay_addr)
                .attr_u32(attr::LIFETIME, lifetime)
                .xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client);
        });
    }

    fn release_ip(&self, key: IpAddr) {
        let mut per_ip = self.per_ip.lock();
        if let Some(n) = per_ip.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&key);
                self.budgets.write().remove(&key);
            }
        }
    }

    fn next_port(&self, even: bool) -> u16 {
        let (lo, hi) = self.s.ports;
        let span = u32::from(hi - lo) + 1;
        let step = if even { 2 } else { 1 };
        let n = self.next_port.fetch_add(step, Ordering::Relaxed) % span;
        let mut p = u32::from(lo) + n;
        if even && p % 2 == 1 {
            p = if p < u32::from(hi) { p + 1 } else { p - 1 };
        }
        u16::try_from(p).unwrap_or(lo)
    }

    fn bind_udp_relay(&self, ip: IpAddr, even: bool) -> Option<(RelayKind, SocketAddr)> {
        let mut opts = waypost_net::listen::SocketOptions::new("relay");
        opts.buffer = waypost_net::listen::LARGE_BUFFER;
        for _ in 0..64 {
            let addr = SocketAddr::new(ip, self.next_port(even));
            if let Ok(sock) = waypost_net::listen::bind_udp_std(addr, &opts) {
                let local = sock.local_addr().ok()?;
                let state =
                    quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&sock)).ok()?;
                allow_fragmentation(&sock);
                let fd = register_udp(sock).ok()?;
                return Some((RelayKind::Udp(Arc::new(fd), state), local));
            }
        }
        None
    }

    fn bind_tcp_relay(&self, ip: IpAddr) -> Option<(tokio::net::TcpListener, SocketAddr)> {
        let mut opts = waypost_net::listen::SocketOptions::new("relay");
        opts.buffer = 0;
        for _ in 0..64 {
            let addr = SocketAddr::new(ip, self.next_port(false));
            if let Ok(l) = waypost_net::listen::bind_tcp(addr, &opts) {
                let local = l.local_addr().ok()?;
                return Some((l, local));
            }
        }
        None
    }

    /// Removes an allocation (expiry, Refresh 0, or its stream closed).
    pub(crate) fn remove_allocation(&self, tuple: &FiveTuple) {
        let removed = self.allocs.write().remove(tuple);
        if let Some(a) = removed {
            a.removed.store(true, Ordering::Relaxed);
            a.cancel.cancel();
            self.removals.fetch_add(1, Ordering::Relaxed);
            self.release_ip(a.ip_key);
            self.pending.lock().retain(|_, p| p.owner != *tuple);
            self.metrics.allocation_closed(match a.relay {
                RelayKind::Udp(..) => Relay::Udp,
                RelayKind::Tcp => Relay::Tcp,
            });
        }
    }

    fn refresh(&self, msg: &Message<'_>, a: &Arc<Allocation>, auth: &Authed, out: &mut Vec<u8>) {
        let lifetime = self.lifetime(msg, DEFAULT_LIFETIME);
        if let Some([fam, ..]) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let v4 = *fam == attr::FAMILY_V4;
            if v4 != a.relay_addr.is_ipv4() {
                return Self::authed_error(out, msg, 443, auth);
            }
        }
        if lifetime == 0 {
            self.remove_allocation(&a.tuple);
        } else {
            a.state.lock().expires =
                Some(Instant::now() + Duration::from_secs(u64::from(lifetime)));
        }
        self.success(out, msg, auth, |w| {
            w.attr_u32(attr::LIFETIME, lifetime);
        });
    }

    /// Checks a peer for a permission or channel; returns the error code to answer, if any.
    fn check_peer(&self, a: &Allocation, peer: SocketAddr) -> Option<u16> {
        if !self.s.filter.allows_ip(peer.ip()) {
            self.metrics.refused(Refusal::PeerDenied);
            return Some(403);
        }
        if !same_family(peer.ip(), a.relay_addr.ip()) {
            return Some(443);
        }
        None
    }

    fn create_permission(
        &self,
        msg: &Message<'_>,
        a: &Arc<Allocation>,
        auth: &Authed,
        out: &mut Vec<u8>,
    ) {
        let tid = msg.transaction_id();
        let mut peers = Vec::new();
        for (t, v) in msg.attrs() {
            if t == attr::XOR_PEER_ADDRESS {
                match attr::decode_xor_addr(v, &tid) {
                    Some(p) => peers.push(p),
                    None => return Self::authed_error(out, msg, 400, auth),
                }
            }
        }
        if peers.is_empty() {
            return Self::authed_error(out, msg, 400, auth);
        }
        for p in &peers {
            if let Some(code) = self.check_peer(a, *p) {
                return Self::authed_error(out, msg, code, auth);
            }
        }
        {
            let mut st = a.state.lock();
            let now = Instant::now();
            st.perms.retain(|_, e| *e > now);
            let new = peers
                .iter()
                .filter(|p| !st.perms.contains_key(&canonical_ip(p.ip())))
                .count();
            if st.perms.len() + new > self.s.max_permissions as usize {
                drop(st);
                self.metrics.refused(Refusal::Quota);
                return Self::authed_error(out, msg, 508, auth);
            }
            for p in &peers {
                st.perms
                    .insert(canonical_ip(p.ip()), now + PERMISSION_LIFETIME);
            }
        }
        self.success(out, msg, auth, |_| {});
    }

    fn channel_bind(
        &self,
        msg: &Message<'_>,
        a: &Arc<Allocation>,
        auth: &Authed,
        out: &mut Vec<u8>,
    ) {
        let ch = match msg.get(attr::CHANNEL_NUMBER) {
            Some([h, l, ..]) => u16::from_be_bytes([*h, *l]),
            _ => return Self::authed_error(out, msg, 400, auth),
        };
        let Some(peer) = msg.xor_addr(attr::XOR_PEER_ADDRESS) else {
            return Self::authed_error(out, msg, 400, auth);
        };
        if !channel::is_channel_number(ch) || !matches!(a.relay, RelayKind::Udp(..)) {
            return Self::authed_error(out, msg, 400, auth);
        }
        if let Some(code) = self.check_peer(a, peer) {
            return Self::authed_error(out, msg, code, auth);
        }
        {
            let mut st = a.state.lock();
            let now = Instant::now();
            let ch_ok = st
                .channels
                .get(&ch)
                .is_none_or(|(p, e)| *p == peer || *e <= now);
            let peer_ok = st.by_peer.get(&peer).is_none_or(|c| *c == ch);
            if !ch_ok || !peer_ok {
                drop(st);
                return Self::authed_error(out, msg, 400, auth);
            }
            if let Some((old, _)) = st.channels.insert(ch, (peer, now + CHANNEL_LIFETIME))
                && old != peer
            {
                st.by_peer.remove(&old);
            }
            st.by_peer.insert(peer, ch);
            if st.perms.len() >= self.s.max_permissions as usize
                && !st.perms.contains_key(&canonical_ip(peer.ip()))
            {
                drop(st);
                return Self::authed_error(out, msg, 508, auth);
            }
            st.perms
                .insert(canonical_ip(peer.ip()), now + PERMISSION_LIFETIME);
        }
        self.success(out, msg, auth, |_| {});
    }

    /// Expires allocations, permissions, channels and unclaimed peer connections.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<FiveTuple> = {
            let allocs = self.allocs.read();
            allocs
                .values()
                .filter(|a| {
                    let mut st = a.state.lock();
                    st.perms.retain(|_, e| *e > now);
                    let dead: Vec<u16> = st
                        .channels
                        .iter()
                        .filter(|(_, (_, e))| *e <= now)
                        .map(|(c, _)| *c)
                        .collect();
                    for c in dead {
                        if let Some((p, _)) = st.channels.remove(&c) {
                            st.by_peer.remove(&p);
                        }
                    }
                    st.expires.is_some_and(|e| e <= now)
                })
                .map(|a| a.tuple)
                .collect()
        };
        for t in expired {
            self.remove_allocation(&t);
        }
        let stale: Vec<FiveTuple> = {
            let mut pending = self.pending.lock();
            let stale = pending
                .values()
                .filter(|p| now.duration_since(p.created) >= CONNECTION_BIND_TIMEOUT)
                .map(|p| p.owner)
                .collect();
            pending.retain(|_, p| now.duration_since(p.created) < CONNECTION_BIND_TIMEOUT);
            stale
        };
        for owner in stale {
            self.tcp_data_closed(&owner);
        }
    }

    // ----- RFC 6062 -------------------------------------------------------------------------

    fn new_connection_id(&self) -> u32 {
        loop {
            let id = rand::rng().next_u32();
            if id != 0 && !self.pending.lock().contains_key(&id) {
                return id;
            }
        }
    }

    /// Accepts peer connections on a TCP allocation's relay address.
    async fn tcp_relay_accept(self: Arc<Self>, a: Arc<Allocation>, l: tokio::net::TcpListener) {
        loop {
            let r = tokio::select! {
                () = a.cancel.cancelled() => return,
                r = l.accept() => r,
            };
            let Ok((stream, peer)) = r else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let allowed = self.s.filter.allows(peer) && {
                let mut st = a.state.lock();
                let ok =
                    st.permitted(peer.ip(), Instant::now()) && st.tcp_conns < MAX_TCP_CONNECTIONS;
                if ok {
                    st.tcp_conns += 1;
                }
                ok
            };
            if !allowed {
                self.metrics.refused(Refusal::PeerDenied);
                continue;
            }
            let id = self.new_connection_id();
            self.pending.lock().insert(
                id,
                Pending {
                    stream: Some(stream),
                    owner: a.tuple,
                    username: a.username.clone(),
                    created: Instant::now(),
                },
            );
            let mut out = Vec::with_capacity(64);
            let mut tid = [0u8; 12];
            rand::rng().fill_bytes(&mut tid);
            let mut w = MessageWriter::new(
                &mut out,
                method::CONNECTION_ATTEMPT,
                Class::Indication,
                &tid,
            );
            w.attr_u32(attr::CONNECTION_ID, id)
                .xor_addr(attr::XOR_PEER_ADDRESS, peer);
            w.finish();
            a.sink.send(&out);
        }
    }

    fn connect(
        self: &Arc<Self>,
        msg: &Message<'_>,
        a: &Arc<Allocation>,
        auth: Authed,
        out: &mut Vec<u8>,
    ) {
        if !matches!(a.relay, RelayKind::Tcp) {
            return Self::authed_error(out, msg, 400, &auth);
        }
        let Some(peer) = msg.xor_addr(attr::XOR_PEER_ADDRESS) else {
            return Self::authed_error(out, msg, 400, &auth);
        };
        if let Some(code) = self.check_peer(a, peer) {
            return Self::authed_error(out, msg, code, &auth);
        }
        {
            let mut st = a.state.lock();
            if st.tcp_conns >= MAX_TCP_CONNECTIONS {
                drop(st);
                return Self::authed_error(out, msg, 508, &auth);
            }
            st.tcp_conns += 1;
            st.perms.insert(
                canonical_ip(peer.ip()),
                Instant::now() + PERMISSION_LIFETIME,
            );
        }
        let server = self.clone();
        let a = a.clone();
        let tid = msg.transaction_id();
        let relay_ip = a.relay_addr.ip();
        tokio::spawn(async move {
            let sock = if relay_ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            };
            let res = match sock.and_then(|s| s.bind(SocketAddr::new(relay_ip, 0)).map(|()| s)) {
                Ok(s) => tokio::time::timeout(CONNECTION_BIND_TIMEOUT, s.connect(peer))
                    .await
                    .ok()
                    .and_then(Result::ok),
                Err(_) => None,
            };
            let mut out = Vec::with_capacity(96);
            match res {
                Some(stream) => {
                    let id = server.new_connection_id();
                    server.pending.lock().insert(
                        id,
                        Pending {
                            stream: Some(stream),
                            owner: a.tuple,
                            username: a.username.clone(),
                            created: Instant::now(),
                        },
                    );
                    let mut w = MessageWriter::new(&mut out, method::CONNECT, Class::Success, &tid);
                    w.attr_u32(attr::CONNECTION_ID, id);
                    Self::finish_authed(&mut w, &auth);
                    w.finish();
                }
                None => {
                    {
                        let mut st = a.state.lock();
                        st.tcp_conns = st.tcp_conns.saturating_sub(1);
                    }
                    let mut w = MessageWriter::new(&mut out, method::CONNECT, Class::Error, &tid);
                    w.error_code(447);
                    Self::finish_authed(&mut w, &auth);
                    w.finish();
                }
            }
            a.sink.send(&out);
        });
    }

    fn connection_bind(
        &self,
        msg: &Message<'_>,
        tuple: FiveTuple,
        auth: &Authed,
        out: &mut Vec<u8>,
    ) -> Action {
        if tuple.transport == Transport::Udp || self.allocs.read().contains_key(&tuple) {
            Self::authed_error(out, msg, 400, auth);
            return Action::Reply;
        }
        let Some(id) = msg.get(attr::CONNECTION_ID).and_then(attr::decode_u32) else {
            Self::authed_error(out, msg, 400, auth);
            return Action::Reply;
        };
        let stream = {
            let mut pending = self.pending.lock();
            match pending.get(&id) {
                Some(p) if p.username == auth.username => pending
                    .remove(&id)
                    .and_then(|mut p| p.stream.take().map(|s| (s, p.owner))),
                _ => None,
            }
        };
        let Some((stream, owner)) = stream else {
            Self::authed_error(out, msg, 400, auth);
            return Action::Reply;
        };
        // The data connection ends with its allocation.
        let Some(alloc_cancel) = self.allocs.read().get(&owner).map(|a| a.cancel.clone()) else {
            Self::authed_error(out, msg, 400, auth);
            return Action::Reply;
        };
        self.success(out, msg, auth, |_| {});
        Action::Bind(stream, owner, alloc_cancel)
    }

    /// An RFC 6062 data connection ended.
    pub(crate) fn tcp_data_closed(&self, owner: &FiveTuple) {
        if let Some(a) = self.allocs.read().get(owner) {
            let mut st = a.state.lock();
            st.tcp_conns = st.tcp_conns.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::net::sockopt;

    #[test]
    fn relay_sockets_do_not_set_df() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let _state = quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&sock)).unwrap();
        super::allow_fragmentation(&sock);
        assert_eq!(
            sockopt::ip_mtu_discover(&sock).unwrap(),
            sockopt::Ipv4PathMtuDiscovery::DONT
        );
        if let Ok(v6) = std::net::UdpSocket::bind("[::1]:0") {
            let _state = quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&v6)).unwrap();
            super::allow_fragmentation(&v6);
            assert_eq!(
                sockopt::ipv6_mtu_discover(&v6).unwrap(),
                sockopt::Ipv6PathMtuDiscovery::DONT
            );
        }
    }
}
