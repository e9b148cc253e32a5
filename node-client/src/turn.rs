//! TURN client (RFC 8656, RFC 6062) over UDP, TCP or TLS, built on the shared STUN codec.
//!
//! - [`TurnClient::connect`] opens the control connection; [`TurnClient::allocate`] allocates a
//!   UDP relay (or, with RFC 6062, a TCP relay) with long-term credentials (static, or derived
//!   from a REST-API shared secret with [`Credentials::rest`]), retrying after the 401 challenge
//!   and on 438 stale nonce.
//! - [`TurnClient::create_permission`], [`TurnClient::channel_bind`], [`TurnClient::send_to`]
//!   and [`TurnClient::recv`] move datagrams through a UDP relay (Send/Data indications or
//!   ChannelData).
//! - [`TurnClient::connect_peer`] (RFC 6062 Connect) and [`Incoming::ConnectionAttempt`] +
//!   [`TurnClient::bind_connection`] (ConnectionBind on a new data connection) give raw TCP
//!   streams to and from peers of a TCP relay.
//!
//! Errors never carry addresses, usernames or passwords.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use waypost_protocol::stun::{self, Class, Message, MessageWriter, attr, channel, method};

/// TURN client errors. Messages carry no address, username or secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnClientError {
    /// Socket or connection failure.
    #[error("network: {0:?}")]
    Io(std::io::ErrorKind),
    /// TLS setup failed.
    #[error("tls: {0}")]
    Tls(String),
    /// No answer in time.
    #[error("timeout waiting for the TURN server")]
    Timeout,
    /// The server answered with an error code.
    #[error("server error {0}")]
    Server(u16),
    /// The server's answer was not what the protocol requires.
    #[error("invalid response: {0}")]
    Protocol(&'static str),
    /// The control connection was closed.
    #[error("connection closed")]
    Closed,
}

impl From<std::io::Error> for TurnClientError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Closed
        } else {
            Self::Io(e.kind())
        }
    }
}

/// How to reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (Jami's calls).
    Udp,
    /// TCP (Jami's ConnectionManager links, with a TCP relay).
    Tcp,
    /// TLS over TCP.
    Tls,
}

/// Long-term credentials.
#[derive(Clone)]
pub struct Credentials {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

impl Credentials {
    /// Static credentials (Jami's default is `ring`/`ring`).
    pub fn fixed(username: &str, password: &str) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    /// REST-API credentials: username `expiry:user`, password base64(HMAC-SHA1(secret, username)).
    pub fn rest(secret: &str, user: &str, ttl: Duration) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let username = if user.is_empty() {
            format!("{}", now + ttl.as_secs())
        } else {
            format!("{}:{user}", now + ttl.as_secs())
        };
        let password = stun::auth::rest_password(secret.as_bytes(), username.as_bytes());
        Self { username, password }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct ServerSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// TLS server name (defaults to the IP).
    pub tls_name: Option<String>,
    /// TLS trust anchors (PEM); without it the system has no roots and TLS fails.
    pub ca: Option<std::path::PathBuf>,
    /// Local IP address to connect from (default: chosen by the system).
    pub source: Option<std::net::IpAddr>,
}

fn local_bind(spec: &ServerSpec) -> SocketAddr {
    match spec.source {
        Some(ip) => SocketAddr::new(ip, 0),
        None if spec.addr.is_ipv4() => ([0, 0, 0, 0], 0).into(),
        None => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

async fn tcp_connect(spec: &ServerSpec) -> Result<TcpStream, TurnClientError> {
    let sock = if spec.addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if spec.source.is_some() {
        sock.bind(local_bind(spec))?;
    }
    let s = sock.connect(spec.addr).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A raw byte stream to a peer (RFC 6062 data connection after ConnectionBind).
pub struct DataStream(Box<dyn Stream>);

impl AsyncRead for DataStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

enum Conn {
    Udp(UdpSocket),
    Stream { s: Box<dyn Stream>, buf: Vec<u8> },
}

impl Conn {
    async fn open(spec: &ServerSpec) -> Result<Self, TurnClientError> {
        match spec.transport {
            Transport::Udp => {
                let s = UdpSocket::bind(local_bind(spec)).await?;
                s.connect(spec.addr).await?;
                Ok(Self::Udp(s))
            }
            Transport::Tcp => {
                let s = tcp_connect(spec).await?;
                Ok(Self::Stream {
                    s: Box::new(s),
                    buf: Vec::new(),
                })
            }
            Transport::Tls => {
                let s = tcp_connect(spec).await?;
                let connector = tls_connector(spec.ca.as_deref())?;
                let name = spec
                    .tls_name
                    .clone()
                    .unwrap_or_else(|| spec.addr.ip().to_string());
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(name)
                    .map_err(|_| TurnClientError::Tls("invalid server name".into()))?;
                let s = connector
                    .connect(name, s)
                    .await
                    .map_err(|e| TurnClientError::Tls(format!("handshake: {:?}", e.kind())))?;
                Ok(Self::Stream {
                    s: Box::new(s),
                    buf: Vec::new(),
                })
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), TurnClientError> {
        match self {
            Self::Udp(s) => {
                s.send(bytes).await?;
            }
            Self::Stream { s, .. } => {
                s.write_all(bytes).await?;
            }
        }
        Ok(())
    }

    /// One STUN message or ChannelData frame.
    async fn recv(&mut self) -> Result<Vec<u8>, TurnClientError> {
        match self {
            Self::Udp(s) => {
                let mut b = vec![0u8; 65_536];
                let n = s.recv(&mut b).await?;
                b.truncate(n);
                Ok(b)
            }
            Self::Stream { s, buf } => loop {
                if let Some(n) =
                    stun::frame_len(buf).map_err(|_| TurnClientError::Protocol("framing"))?
                    && buf.len() >= n
                {
                    let rest = buf.split_off(n);
                    return Ok(std::mem::replace(buf, rest));
                }
                let mut chunk = [0u8; 16_384];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(TurnClientError::Closed);
                }
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }

    fn into_stream(self) -> Option<(Box<dyn Stream>, Vec<u8>)> {
        match self {
            Self::Udp(_) => None,
            Self::Stream { s, buf } => Some((s, buf)),
        }
    }
}

fn tls_connector(ca: Option<&Path>) -> Result<tokio_rustls::TlsConnector, TurnClientError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|_| TurnClientError::Tls("cannot read the CA file".into()))?;
        for c in certs {
            let c = c.map_err(|_| TurnClientError::Tls("invalid CA file".into()))?;
            roots
                .add(c)
                .map_err(|_| TurnClientError::Tls("invalid CA certificate".into()))?;
        }
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Something that arrived on the control connection outside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A datagram from a peer (Data indication or ChannelData).
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The payload.
        data: Vec<u8>,
    },
    /// RFC 6062: a peer connected to our TCP relay.
    ConnectionAttempt {
        /// The peer.
        peer: SocketAddr,
        /// The CONNECTION-ID to bind.
        id: u32,
    },
}

/// Result of an allocation.
#[derive(Clone, Copy, Debug)]
pub struct Allocation {
    /// Relayed transport address.
    pub relayed: SocketAddr,
    /// Our address as the server sees it.
    pub mapped: Option<SocketAddr>,
    /// Granted lifetime in seconds.
    pub lifetime: u32,
}

/// A TURN client on one control connection.
pub struct TurnClient {
    spec: ServerSpec,
    conn: Conn,
    creds: Credentials,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: [u8; 16],
    rng: rand::rngs::StdRng,
    pending: VecDeque<Incoming>,
    channels: HashMap<SocketAddr, u16>,
    by_channel: HashMap<u16, SocketAddr>,
    next_channel: u16,
    rto: Duration,
    /// Transaction timeout.
    pub timeout: Duration,
}

type Response = (Class, Vec<u8>);

/// SOFTWARE attribute of our requests.
const SOFTWARE: &[u8] = b"waypost node-client (reference peer)";

impl TurnClient {
    /// Opens the control connection.
    pub async fn connect(spec: ServerSpec, creds: Credentials) -> Result<Self, TurnClientError> {
        let conn = Conn::open(&spec).await?;
        Ok(Self {
            spec,
            conn,
            creds,
            realm: Vec::new(),
            nonce: Vec::new(),
            key: [0; 16],
            rng: rand::rngs::StdRng::from_os_rng(),
            pending: VecDeque::new(),
            channels: HashMap::new(),
            by_channel: HashMap::new(),
            next_channel: 0x4000,
            rto: Duration::from_millis(250),
            timeout: Duration::from_secs(10),
        })
    }

    fn tid(&mut self) -> [u8; 12] {
        let mut t = [0u8; 12];
        self.rng.fill_bytes(&mut t);
        t
    }

    /// Sends a request built by `build` (authenticated once a realm is known), retransmitting
    /// on UDP; returns the class and the bytes of the response.
    async fn transaction(
        &mut self,
        m: u16,
        build: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Result<Response, TurnClientError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let tid = self.tid();
            let mut buf = Vec::with_capacity(256);
            {
                let mut w = MessageWriter::new(&mut buf, m, Class::Request, &tid);
                build(&mut w);
                // Like real clients (pjnath, coturn) name the software: the server answers an
                // unauthenticated request only when the answer is not larger (no amplification).
                w.attr(attr::SOFTWARE, SOFTWARE);
                if !self.realm.is_empty() {
                    w.attr(attr::USERNAME, self.creds.username.as_bytes());
                    w.attr(attr::REALM, &self.realm);
                    w.attr(attr::NONCE, &self.nonce);
                    w.integrity(&self.key);
                }
                w.finish();
            }
            let (class, resp) = self.exchange(&buf, tid).await?;
            if class == Class::Error {
                let msg = Message::parse(&resp).map_err(|_| TurnClientError::Protocol("stun"))?;
                let code = msg
                    .get(attr::ERROR_CODE)
                    .and_then(attr::decode_error_code)
                    .unwrap_or(0);
                if (code == 401 || code == 438) && attempts < 3 {
                    let realm = msg.get(attr::REALM).map(<[u8]>::to_vec);
                    let nonce = msg.get(attr::NONCE).map(<[u8]>::to_vec);
                    if let (Some(realm), Some(nonce)) = (realm, nonce) {
                        if code == 401 && !self.realm.is_empty() && attempts > 1 {
                            return Err(TurnClientError::Server(401));
                        }
                        self.key = stun::auth::long_term_key(
                            self.creds.username.as_bytes(),
                            &realm,
                            self.creds.password.as_bytes(),
                        );
                        self.realm = realm;
                        self.nonce = nonce;
                        continue;
                    }
                }
                return Err(TurnClientError::Server(code));
            }
            return Ok((class, resp));
        }
    }

    async fn exchange(&mut self, req: &[u8], tid: [u8; 12]) -> Result<Response, TurnClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let udp = matches!(self.conn, Conn::Udp(_));
        let mut rto = self.rto;
        self.conn.send(req).await?;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(TurnClientError::Timeout);
            }
            let wait = if udp {
                rto.min(deadline - now)
            } else {
                deadline - now
            };
            match tokio::time::timeout(wait, self.conn.recv()).await {
                Err(_) => {
                    if udp {
                        rto = (rto * 2).min(Duration::from_secs(2));
                        self.conn.send(req).await?;
                    }
                }
                Ok(r) => {
                    let bytes = r?;
                    if let Some(resp) = self.dispatch(bytes, Some(tid)) {
                        return Ok(resp);
                    }
                }
            }
        }
    }

    /// Handles one received frame: a response to `tid` is returned; data and connection
    /// attempts are queued.
    fn dispatch(&mut self, bytes: Vec<u8>, tid: Option<[u8; 12]>) -> Option<Response> {
        if let Some((ch, payload)) = channel::parse(&bytes) {
            if let Some(peer) = self.by_channel.get(&ch) {
                self.pending.push_back(Incoming::Data {
                    peer: *peer,
                    data: payload.to_vec(),
                });
            }
            return None;
        }
        let msg = Message::parse(&bytes).ok()?;
        match msg.class() {
            Class::Success | Class::Error => {
                if Some(msg.transaction_id()) == tid {
                    return Some((msg.class(), bytes.clone()));
                }
            }
            Class::Indication => {
                let peer = msg.xor_addr(attr::XOR_PEER_ADDRESS);
                match (msg.method(), peer) {
                    (method::DATA, Some(peer)) => {
                        if let Some(d) = msg.get(attr::DATA) {
                            self.pending.push_back(Incoming::Data {
                                peer,
                                data: d.to_vec(),
                            });
                        }
                    }
                    (method::CONNECTION_ATTEMPT, Some(peer)) => {
                        if let Some(id) = msg.get(attr::CONNECTION_ID).and_then(attr::decode_u32) {
                            self.pending
                                .push_back(Incoming::ConnectionAttempt { peer, id });
                        }
                    }
                    _ => {}
                }
            }
            Class::Request => {}
        }
        None
    }

    /// Allocates a relay: UDP, or TCP (RFC 6062) when `tcp_relay`.
    pub async fn allocate(
        &mut self,
        tcp_relay: bool,
        lifetime: Option<u32>,
    ) -> Result<Allocation, TurnClientError> {
        let proto = if tcp_relay {
            attr::TRANSPORT_TCP
        } else {
            attr::TRANSPORT_UDP
        };
        let (_, resp) = self
            .transaction(method::ALLOCATE, &|w: &mut MessageWriter<'_>| {
                w.attr(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0]);
                if let Some(l) = lifetime {
                    w.attr_u32(attr::LIFETIME, l);
                }
            })
            .await?;
        let msg = Message::parse(&resp).map_err(|_| TurnClientError::Protocol("stun"))?;
        let relayed = msg
            .xor_addr(attr::XOR_RELAYED_ADDRESS)
            .ok_or(TurnClientError::Protocol("no XOR-RELAYED-ADDRESS"))?;
        let mapped = msg.xor_addr(attr::XOR_MAPPED_ADDRESS);
        let lifetime = msg
            .get(attr::LIFETIME)
            .and_then(attr::decode_u32)
            .unwrap_or(600);
        Ok(Allocation {
            relayed,
            mapped,
            lifetime,
        })
    }

    /// Refreshes the allocation; `0` deletes it.
    pub async fn refresh(&mut self, lifetime: u32) -> Result<u32, TurnClientError> {
        let (_, resp) = self
            .transaction(method::REFRESH, &|w: &mut MessageWriter<'_>| {
                w.attr_u32(attr::LIFETIME, lifetime);
            })
            .await?;
        let msg = Message::parse(&resp).map_err(|_| TurnClientError::Protocol("stun"))?;
        Ok(msg
            .get(attr::LIFETIME)
            .and_then(attr::decode_u32)
            .unwrap_or(lifetime))
    }

    /// Installs a permission for the peer's IP address.
    pub async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), TurnClientError> {
        self.transaction(method::CREATE_PERMISSION, &|w: &mut MessageWriter<'_>| {
            w.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
        .await?;
        Ok(())
    }

    /// Binds a channel to the peer (also installs the permission); returns the channel number.
    pub async fn channel_bind(&mut self, peer: SocketAddr) -> Result<u16, TurnClientError> {
        if let Some(ch) = self.channels.get(&peer) {
            return Ok(*ch);
        }
        let ch = self.next_channel;
        self.transaction(method::CHANNEL_BIND, &|w: &mut MessageWriter<'_>| {
            let b = ch.to_be_bytes();
            w.attr(attr::CHANNEL_NUMBER, &[b[0], b[1], 0, 0]);
            w.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
        .await?;
        self.next_channel += 1;
        self.channels.insert(peer, ch);
        self.by_channel.insert(ch, peer);
        Ok(ch)
    }

    /// Sends a datagram to the peer through the relay (ChannelData when a channel is bound,
    /// otherwise a Send indication).
    pub async fn send_to(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), TurnClientError> {
        let mut buf = Vec::with_capacity(data.len() + 40);
        if let Some(ch) = self.channels.get(&peer) {
            buf.extend_from_slice(&channel::header(*ch, data.len()));
            buf.extend_from_slice(data);
            if matches!(self.conn, Conn::Stream { .. }) {
                buf.extend(std::iter::repeat_n(
                    0u8,
                    channel::stream_padding(data.len()),
                ));
            }
        } else {
            let tid = self.tid();
            let mut w = MessageWriter::new(&mut buf, method::SEND, Class::Indication, &tid);
            w.xor_addr(attr::XOR_PEER_ADDRESS, peer);
            w.attr(attr::DATA, data);
            w.finish();
        }
        self.conn.send(&buf).await
    }

    /// The next datagram or connection attempt, waiting at most `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Option<Incoming>, TurnClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.pending.pop_front() {
                return Ok(Some(i));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match tokio::time::timeout(deadline - now, self.conn.recv()).await {
                Err(_) => return Ok(None),
                Ok(r) => {
                    let b = r?;
                    let _ = self.dispatch(b, None);
                }
            }
        }
    }

    /// RFC 6062 Connect: asks the server to open a TCP connection to the peer; returns the
    /// CONNECTION-ID to bind with [`Self::bind_connection`].
    pub async fn connect_peer(&mut self, peer: SocketAddr) -> Result<u32, TurnClientError> {
        let (_, resp) = self
            .transaction(method::CONNECT, &|w: &mut MessageWriter<'_>| {
                w.xor_addr(attr::XOR_PEER_ADDRESS, peer);
            })
            .await?;
        let msg = Message::parse(&resp).map_err(|_| TurnClientError::Protocol("stun"))?;
        msg.get(attr::CONNECTION_ID)
            .and_then(attr::decode_u32)
            .ok_or(TurnClientError::Protocol("no CONNECTION-ID"))
    }

    /// RFC 6062 ConnectionBind on a new data connection to the server; afterwards the stream
    /// carries the peer's bytes.
    pub async fn bind_connection(&mut self, id: u32) -> Result<DataStream, TurnClientError> {
        let mut data = Self {
            spec: self.spec.clone(),
            conn: Conn::open(&self.spec).await?,
            creds: self.creds.clone(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            key: self.key,
            rng: rand::rngs::StdRng::from_os_rng(),
            pending: VecDeque::new(),
            channels: HashMap::new(),
            by_channel: HashMap::new(),
            next_channel: 0x4000,
            rto: self.rto,
            timeout: self.timeout,
        };
        data.transaction(method::CONNECTION_BIND, &|w: &mut MessageWriter<'_>| {
            w.attr_u32(attr::CONNECTION_ID, id);
        })
        .await?;
        let (s, rest) = data
            .conn
            .into_stream()
            .ok_or(TurnClientError::Protocol("ConnectionBind needs TCP or TLS"))?;
        Ok(DataStream(Box::new(Prefixed {
            prefix: rest,
            at: 0,
            inner: s,
        })))
    }
}

/// A stream with bytes already read in front of it.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: Box<dyn Stream>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
