//! STUN/TURN relay over UDP, TCP and TLS with RFC 6062, for Jami.
//!
//! [`Listeners::bind`] binds every socket (UDP shards with `SO_REUSEPORT`, TCP and TLS
//! listeners, the admin listener) from validated [`config::Settings`]; [`run`] serves them until
//! the [`Shutdown`] fires, then drains allocations for the configured grace period.

pub mod config;
pub mod filter;
pub mod metrics;
mod outbox;
mod server;
mod stream;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use waypost_net::admin::Admin;
use waypost_net::listen::{SocketOptions, bind_tcp_std, bind_udp_std};
use waypost_net::shutdown::Shutdown;
use waypost_net::tls::ReloadableTls;

pub use config::{Settings, TurnConfig, TurnLayer};

/// Errors of the TURN server. Messages never carry addresses, usernames or secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket could not be bound or used.
    #[error(transparent)]
    Net(#[from] waypost_net::NetError),
}

/// Bound sockets, ready to serve.
pub struct Listeners {
    /// UDP shards, grouped by listen address.
    pub udp: Vec<Vec<std::net::UdpSocket>>,
    /// TCP listeners (same ports as the UDP ones).
    pub tcp: Vec<std::net::TcpListener>,
    /// TLS listeners.
    pub tls: Vec<std::net::TcpListener>,
    /// Admin listener.
    pub admin: Option<std::net::TcpListener>,
    tls_config: Option<ReloadableTls>,
}

impl Listeners {
    /// Binds everything the settings ask for. Port 0 picks one free port shared by UDP and TCP.
    pub fn bind(s: &Settings) -> Result<Self, TurnError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut opts = SocketOptions::new("udp");
        opts.reuse_port = s.shards > 1;
        for addr in &s.listen {
            let mut last_err = None;
            let mut done = false;
            for _ in 0..20 {
                match bind_pair(*addr, s.shards, &opts) {
                    Ok((u, t)) => {
                        udp.push(u);
                        tcp.push(t);
                        done = true;
                        break;
                    }
                    Err(e) => {
                        last_err = Some(e);
                        if addr.port() != 0 {
                            break;
                        }
                    }
                }
            }
            if !done {
                return Err(last_err
                    .unwrap_or(waypost_net::NetError::Io(std::io::ErrorKind::AddrInUse))
                    .into());
            }
        }
        let tls_config = match &s.tls_files {
            Some((c, k)) => Some(ReloadableTls::load(c, k, &[])?),
            None => None,
        };
        let mut tls = Vec::new();
        for addr in &s.tls_listen {
            tls.push(bind_tcp_std(*addr, &SocketOptions::new("tls"))?);
        }
        let admin = match s.admin.addr() {
            Some(a) => {
                let mut o = SocketOptions::new("admin");
                o.buffer = 0;
                Some(bind_tcp_std(a, &o)?)
            }
            None => None,
        };
        Ok(Self {
            udp,
            tcp,
            tls,
            admin,
            tls_config,
        })
    }

    /// The UDP/TCP listen addresses (one per `--listen`).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The TLS listen addresses.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

fn bind_pair(
    addr: SocketAddr,
    shards: usize,
    opts: &SocketOptions,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), waypost_net::NetError> {
    let first = bind_udp_std(addr, opts)?;
    let actual = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..shards {
        socks.push(bind_udp_std(actual, opts)?);
    }
    let tcp = bind_tcp_std(
        actual,
        &SocketOptions {
            buffer: 0,
            reuse_port: false,
            label: "tcp",
        },
    )?;
    Ok((socks, tcp))
}

/// Serves until `shutdown` fires, then drains: new allocations are refused and the server
/// stops once no allocation is left or the drain period is over.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    admin: Admin,
    shutdown: Shutdown,
) -> Result<(), TurnError> {
    let metrics =
        admin.with_registry(|r| metrics::Metrics::new(r.sub_registry_with_prefix("turn")));
    let stop = CancellationToken::new();
    let drain = Duration::from_secs(settings.drain_seconds);
    let server = server::Server::new(settings, metrics.clone(), stop.clone());
    let tracker = tokio_util::task::TaskTracker::new();

    let shards = Shards::start(server.s.shards, &stop, &metrics)?;
    for group in listeners.udp {
        for (i, sock) in group.into_iter().enumerate() {
            let local = sock.local_addr().map_err(waypost_net::NetError::from)?;
            let server = server.clone();
            shards.handle(i).spawn(async move {
                if let Ok(sock) = server::register_udp(sock) {
                    udp::serve(server, Arc::new(sock), local).await;
                }
            });
        }
    }
    let shards = Arc::new(shards);
    for l in listeners.tcp {
        let l = tokio::net::TcpListener::from_std(l).map_err(waypost_net::NetError::from)?;
        tracker.spawn(accept_loop(server.clone(), l, None, shards.clone()));
    }
    if let Some(tls) = &listeners.tls_config {
        #[cfg(unix)]
        tracker.spawn(tls.clone().reload_on_sighup(shutdown.clone()));
        for l in listeners.tls {
            let l = tokio::net::TcpListener::from_std(l).map_err(waypost_net::NetError::from)?;
            tracker.spawn(accept_loop(
                server.clone(),
                l,
                Some(tls.clone()),
                shards.clone(),
            ));
        }
    }
    if let Some(l) = listeners.admin {
        let l = tokio::net::TcpListener::from_std(l).map_err(waypost_net::NetError::from)?;
        let admin_sd = Shutdown::new();
        let admin2 = admin.clone();
        let sd2 = admin_sd.clone();
        tracker.spawn(async move { admin2.serve(l, sd2).await });
        let stop2 = stop.clone();
        tokio::spawn(async move {
            stop2.cancelled().await;
            admin_sd.trigger();
        });
    }
    {
        let server = server.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => server.sweep(),
                }
            }
        });
    }
    admin.set_ready(true);
    tracing::info!(
        count = server.s.listen.len() + server.s.tls_listen.len(),
        "turn server listening"
    );

    shutdown.cancelled().await;
    admin.set_ready(false);
    server.draining.store(true, Ordering::Relaxed);
    let start = Instant::now();
    while server.allocation_count() > 0 && start.elapsed() < drain {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(count = server.allocation_count(), "turn server stopping");
    stop.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    if let Ok(shards) = Arc::try_unwrap(shards) {
        let _ = tokio::task::spawn_blocking(move || shards.join()).await;
    }
    Ok(())
}

/// One current-thread runtime per shard, each on its own OS thread. A UDP listener socket, the
/// relay sockets of the allocations it creates and the stream connections handed to it all live
/// on one thread: no cross-thread wake-ups on the data path.
struct Shards {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Shards {
    fn start(
        n: usize,
        stop: &CancellationToken,
        metrics: &metrics::Metrics,
    ) -> Result<Self, TurnError> {
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n.max(1) {
            // Relayed datagrams queued while the shard works go out just before it parks.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(outbox::flush)
                .build()
                .map_err(waypost_net::NetError::from)?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            let metrics = metrics.clone();
            let t = std::thread::Builder::new()
                .name("turn-shard".into())
                .spawn(move || {
                    outbox::install(metrics);
                    rt.block_on(stop.cancelled());
                    rt.shutdown_timeout(Duration::from_secs(1));
                    outbox::uninstall();
                })
                .map_err(waypost_net::NetError::from)?;
            threads.push(t);
        }
        Ok(Self {
            handles,
            threads,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn handle(&self, i: usize) -> &tokio::runtime::Handle {
        &self.handles[i % self.handles.len()]
    }

    fn next(&self) -> &tokio::runtime::Handle {
        self.handle(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    server: Arc<server::Server>,
    l: tokio::net::TcpListener,
    tls: Option<ReloadableTls>,
    shards: Arc<Shards>,
) {
    let stop = server.stop.clone();
    let Ok(local) = l.local_addr() else { return };
    loop {
        let r = tokio::select! {
            () = stop.cancelled() => return,
            r = l.accept() => r,
        };
        let Ok((stream, client)) = r else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Some(slot) = server.connection_slot(client.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Hand the connection to a shard: it re-registers there.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let server = server.clone();
        let tls = tls.as_ref().map(ReloadableTls::acceptor);
        shards.next().spawn(async move {
            let _slot = slot;
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                return;
            };
            match tls {
                None => stream::serve(server, stream, client, local, metrics::Transport::Tcp).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await;
                    if let Ok(Ok(s)) = hs {
                        stream::serve(server, s, client, local, metrics::Transport::Tls).await;
                    }
                }
            }
        });
    }
}
