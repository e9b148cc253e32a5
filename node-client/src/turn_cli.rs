//! `node-client turn ...`: allocate, receive and send data through a TURN relay.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::output;
use crate::transfer::{self, Pipe};
use crate::turn::{Credentials, Incoming, ServerSpec, Transport, TurnClient, TurnClientError};

/// How to reach and authenticate to the TURN server.
#[derive(Debug, Clone, Args)]
pub struct TurnServerArgs {
    /// TURN server HOST:PORT (Jami's default is turn.jami.net:3478).
    #[arg(long, env = "WAYPOST_TURN_SERVER", default_value = "127.0.0.1:3478")]
    pub server: String,
    /// Transport to the server.
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: Transport,
    /// TLS: server name to verify (default: the server's IP).
    #[arg(long)]
    pub tls_name: Option<String>,
    /// TLS: CA certificate(s) to trust (PEM).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Username for static long-term credentials (Jami: ring).
    #[arg(long, default_value = "ring")]
    pub user: String,
    /// Password for static credentials (Jami: ring).
    #[arg(
        long,
        env = "WAYPOST_TURN_PASSWORD",
        default_value = "ring",
        hide_env_values = true
    )]
    pub password: String,
    /// REST-API shared secret: derive time-limited credentials instead (username
    /// `expiry:user`).
    #[arg(long, env = "WAYPOST_TURN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Lifetime of REST-API credentials, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub rest_ttl: u64,
    /// Local IP address to send from (to the server, and to a peer with --direct).
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<IpAddr>,
}

/// `node-client turn ...`
#[derive(Debug, Subcommand)]
pub enum TurnCommand {
    /// Allocate a relay, print its address, optionally hold it, then release it.
    Allocate {
        #[command(flatten)]
        server: TurnServerArgs,
        /// Ask for a TCP relay (RFC 6062; needs --transport tcp or tls).
        #[arg(long)]
        tcp_relay: bool,
        /// Install a permission for this peer IP (repeatable).
        #[arg(long, value_name = "IP")]
        permit: Vec<IpAddr>,
        /// Requested lifetime, seconds.
        #[arg(long)]
        lifetime: Option<u32>,
        /// Keep the allocation this many seconds (refreshing it) before releasing it.
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
    /// Allocate a relay and receive BYTES from a peer through it, then print the checksum.
    Listen {
        #[command(flatten)]
        server: TurnServerArgs,
        /// TCP relay: accept the peer's connection (RFC 6062 ConnectionAttempt + ConnectionBind).
        #[arg(long)]
        tcp_relay: bool,
        /// Peer IP allowed to reach the relay (repeatable).
        #[arg(long, value_name = "IP", required = true)]
        permit: Vec<IpAddr>,
        /// Number of bytes expected.
        #[arg(long)]
        bytes: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Answer with Send indications instead of binding a channel.
        #[arg(long)]
        no_channel: bool,
    },
    /// Send BYTES of pseudo-random data to a peer (usually someone's relayed address).
    Send {
        #[command(flatten)]
        server: TurnServerArgs,
        /// Destination HOST:PORT.
        #[arg(long)]
        peer: SocketAddr,
        /// Number of bytes.
        #[arg(long)]
        bytes: usize,
        /// Seed of the pseudo-random payload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The peer is a TCP relay: open a TCP connection to it.
        #[arg(long)]
        tcp: bool,
        /// Do not use our own TURN allocation: send from a plain socket.
        #[arg(long)]
        direct: bool,
        /// Through our allocation: use Send indications instead of a channel.
        #[arg(long)]
        no_channel: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

async fn open(a: &TurnServerArgs) -> Result<TurnClient, TurnClientError> {
    let addr = tokio::net::lookup_host(&a.server)
        .await?
        .next()
        .ok_or(TurnClientError::Io(std::io::ErrorKind::NotFound))?;
    let creds = match &a.secret {
        Some(s) => Credentials::rest(s, &a.user, Duration::from_secs(a.rest_ttl)),
        None => Credentials::fixed(&a.user, &a.password),
    };
    TurnClient::connect(
        ServerSpec {
            addr,
            transport: a.transport,
            tls_name: a.tls_name.clone(),
            ca: a.ca.clone(),
            source: a.source_ip,
        },
        creds,
    )
    .await
}

/// Runs a `turn` command; returns the exit code.
pub async fn run(cmd: TurnCommand) -> Result<i32, TurnClientError> {
    match cmd {
        TurnCommand::Allocate {
            server,
            tcp_relay,
            permit,
            lifetime,
            hold,
        } => {
            let mut c = open(&server).await?;
            output::progress("allocating");
            let a = c.allocate(tcp_relay, lifetime).await?;
            for ip in &permit {
                c.create_permission(SocketAddr::new(*ip, 0)).await?;
            }
            output::result(&json!({
                "event": "allocated",
                "transport": server.transport,
                "relay": if tcp_relay { "tcp" } else { "udp" },
                "relayed": a.relayed.to_string(),
                "mapped": a.mapped.map(|m| m.to_string()),
                "lifetime": a.lifetime,
                "permissions": permit.len(),
            }));
            let end = tokio::time::Instant::now() + Duration::from_secs(hold);
            let every = Duration::from_secs(u64::from(a.lifetime.max(60) / 2));
            while tokio::time::Instant::now() < end {
                let wait = every.min(end - tokio::time::Instant::now());
                let _ = c.recv(wait).await?;
                if tokio::time::Instant::now() < end {
                    c.refresh(a.lifetime).await?;
                    output::progress("refreshed");
                }
            }
            c.refresh(0).await?;
            output::result(&json!({"event": "released"}));
            Ok(crate::cli::EXIT_OK)
        }
        TurnCommand::Listen {
            server,
            tcp_relay,
            permit,
            bytes,
            timeout,
            no_channel,
        } => {
            let mut c = open(&server).await?;
            let a = c.allocate(tcp_relay, None).await?;
            for ip in &permit {
                c.create_permission(SocketAddr::new(*ip, 0)).await?;
            }
            output::result(&json!({
                "event": "allocated",
                "relay": if tcp_relay { "tcp" } else { "udp" },
                "relayed": a.relayed.to_string(),
                "mapped": a.mapped.map(|m| m.to_string()),
                "lifetime": a.lifetime,
            }));
            let deadline = Duration::from_secs(timeout);
            let mut prog = output::bytes_progress("received");
            let started: Option<std::time::Instant>;
            let data = if tcp_relay {
                let end = tokio::time::Instant::now() + deadline;
                let (peer, id) = loop {
                    let left = end.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(TurnClientError::Timeout);
                    }
                    if let Some(Incoming::ConnectionAttempt { peer, id }) = c.recv(left).await? {
                        break (peer, id);
                    }
                };
                output::progress(&format!("connection attempt from {peer}"));
                let mut s = c.bind_connection(id).await?;
                started = Some(std::time::Instant::now());
                tokio::time::timeout(deadline, transfer::recv_stream(&mut s, bytes, &mut prog))
                    .await
                    .map_err(|_| TurnClientError::Timeout)??
            } else {
                let mut pipe = Pipe::Turn {
                    client: &mut c,
                    peer: None,
                    channel: !no_channel,
                };
                let mut first = None;
                let mut last = None;
                let mut prog2 = |done: u64, total: u64| {
                    let now = std::time::Instant::now();
                    first.get_or_insert(now);
                    last = Some(now);
                    prog(done, total);
                };
                let d = transfer::recv_datagrams(&mut pipe, deadline, &mut prog2).await?;
                // From the first to the last datagram (not the final linger).
                started = first
                    .map(|f| std::time::Instant::now() - last.map_or(Duration::ZERO, |l| l - f));
                d
            };
            let ok = data.len() == bytes;
            let ms = started.map_or(0, |t| t.elapsed().as_millis());
            output::result(&json!({
                "event": "received",
                "bytes": data.len(),
                "sha256": transfer::sha256_hex(&data),
                "complete": ok,
                "duration_ms": ms,
            }));
            let _ = c.refresh(0).await;
            Ok(if ok {
                crate::cli::EXIT_OK
            } else {
                crate::cli::EXIT_ERROR
            })
        }
        TurnCommand::Send {
            server,
            peer,
            bytes,
            seed,
            tcp,
            direct,
            no_channel,
            timeout,
        } => {
            let data = transfer::payload(bytes, seed);
            let deadline = Duration::from_secs(timeout);
            let mut prog = output::bytes_progress("sent");
            let started = std::time::Instant::now();
            match (tcp, direct) {
                (true, true) => {
                    let sock = if peer.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    if let Some(ip) = server.source_ip {
                        sock.bind(SocketAddr::new(ip, 0))?;
                    }
                    let mut s = sock.connect(peer).await?;
                    tokio::time::timeout(deadline, transfer::send_stream(&mut s, &data, &mut prog))
                        .await
                        .map_err(|_| TurnClientError::Timeout)??;
                }
                (true, false) => {
                    let mut c = open(&server).await?;
                    let a = c.allocate(true, None).await?;
                    output::progress(&format!("allocated TCP relay {}", a.relayed));
                    c.create_permission(peer).await?;
                    let id = c.connect_peer(peer).await?;
                    let mut s = c.bind_connection(id).await?;
                    tokio::time::timeout(deadline, transfer::send_stream(&mut s, &data, &mut prog))
                        .await
                        .map_err(|_| TurnClientError::Timeout)??;
                    // Let the relay forward everything before the control connection goes.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    drop(s);
                    let _ = c.refresh(0).await;
                }
                (false, true) => {
                    let bind: SocketAddr = match server.source_ip {
                        Some(ip) => SocketAddr::new(ip, 0),
                        None if peer.is_ipv4() => ([0, 0, 0, 0], 0).into(),
                        None => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                    };
                    let sock = tokio::net::UdpSocket::bind(bind).await?;
                    let mut pipe = Pipe::Plain {
                        sock: &sock,
                        peer: Some(peer),
                    };
                    transfer::send_datagrams(&mut pipe, &data, deadline, &mut prog).await?;
                }
                (false, false) => {
                    let mut c = open(&server).await?;
                    let a = c.allocate(false, None).await?;
                    output::progress(&format!("allocated UDP relay {}", a.relayed));
                    if no_channel {
                        c.create_permission(peer).await?;
                    } else {
                        c.channel_bind(peer).await?;
                    }
                    {
                        let mut pipe = Pipe::Turn {
                            client: &mut c,
                            peer: Some(peer),
                            channel: !no_channel,
                        };
                        transfer::send_datagrams(&mut pipe, &data, deadline, &mut prog).await?;
                    }
                    let _ = c.refresh(0).await;
                }
            }
            output::result(&json!({
                "event": "sent",
                "bytes": data.len(),
                "sha256": transfer::sha256_hex(&data),
                "duration_ms": started.elapsed().as_millis(),
            }));
            Ok(crate::cli::EXIT_OK)
        }
    }
}
