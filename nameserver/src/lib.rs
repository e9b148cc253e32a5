//! Jami-compatible name registrar.
//!
//! Serves the Jami name server HTTP API (`GET /name/{name}`, `GET /addr/{addr}`,
//! `POST /name/{name}`) from a crash-safe embedded store. See `docs/nameserver.md`.
//!
//! - [`config`]: layered configuration and validation.
//! - [`store`]: the [`store::NameStore`] trait, the in-memory and redb stores.
//! - `eth` (feature `eth`): the store backed by a registrar contract on an Ethereum chain.
//! - [`metrics`]: Prometheus counters by typed outcome.
//! - [`ratelimit`]: the per-source-IP POST limiter (memory only).
//!
//! [`run`] serves HTTP/1.1 on a bound listener until shutdown.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::time::Instant;
use waypost_net::shutdown::Shutdown;
use waypost_net::tls::ReloadableTls;

pub mod config;
#[cfg(feature = "eth")]
pub mod eth;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod store;

mod api;

pub use config::{NameserverConfig, NameserverLayer, Settings, StoreKind};
pub use metrics::Metrics;
pub use store::{MemoryStore, NameStore, RedbStore, StoreError};

/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NameserverError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listener problem.
    #[error(transparent)]
    Net(#[from] waypost_net::NetError),
}

/// Opens the store the settings ask for.
pub fn open_store(settings: &Settings) -> Result<Arc<dyn NameStore>, StoreError> {
    Ok(match settings.store {
        StoreKind::Redb => Arc::new(RedbStore::open(&settings.data_dir)?),
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        // Needs a running Tokio runtime: the chain client runs its calls on it.
        #[cfg(feature = "eth")]
        StoreKind::Ethereum => Arc::new(eth::EthStore::open(
            settings,
            tokio::runtime::Handle::try_current().map_err(|_| StoreError::Open)?,
        )?),
        // Refused by validation in a build without the `eth` feature.
        #[cfg(not(feature = "eth"))]
        StoreKind::Ethereum => return Err(StoreError::Open),
    })
}

/// Serves the API on `listener` until `shutdown` is triggered, then drains in-flight requests
/// for the configured grace period.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    store: Arc<dyn NameStore>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> Result<(), NameserverError> {
    run_with_tls(settings, listener, None, store, metrics, shutdown).await
}

/// Like [`run`], with an optional second listener that speaks HTTPS (HTTP/1.1 over TLS) with the
/// given reloadable certificate.
pub async fn run_with_tls(
    settings: Settings,
    listener: TcpListener,
    tls: Option<(TcpListener, ReloadableTls)>,
    store: Arc<dyn NameStore>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> Result<(), NameserverError> {
    let limiter = settings.post_limit.map(ratelimit::RateLimiter::new);
    let grace = settings.shutdown_grace;
    let permits = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let state = Arc::new(api::AppState {
        store,
        metrics,
        limiter,
        settings,
    });
    let tls_loop = tls.map(|(l, t)| {
        tokio::spawn(accept_loop(
            state.clone(),
            l,
            Some(t),
            permits.clone(),
            shutdown.clone(),
        ))
    });
    accept_loop(state, listener, None, permits, shutdown.clone()).await;
    if let Some(h) = tls_loop {
        let _ = h.await;
    }
    if !shutdown.drain(grace).await {
        tracing::warn!("shutdown grace period over with requests in flight");
    }
    Ok(())
}

async fn accept_loop(
    state: Arc<api::AppState>,
    listener: TcpListener,
    tls: Option<ReloadableTls>,
    permits: Arc<tokio::sync::Semaphore>,
    shutdown: Shutdown,
) {
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error.kind = ?e.kind(), "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let sd = shutdown.clone();
        let acceptor = tls.as_ref().map(ReloadableTls::acceptor);
        shutdown.spawn(async move {
            state.metrics.connections().inc();
            match acceptor {
                None => serve_connection(state.clone(), stream, peer.ip(), sd).await,
                Some(acceptor) => {
                    // The handshake counts against the header timeout.
                    let hs = tokio::time::timeout(
                        state.settings.header_timeout,
                        acceptor.accept(stream),
                    );
                    if let Ok(Ok(tls_stream)) = hs.await {
                        serve_connection(state.clone(), tls_stream, peer.ip(), sd).await;
                    }
                }
            }
            state.metrics.connections().dec();
            drop(permit);
        });
    }
}

/// Per-connection activity, for the keep-alive idle timeout.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

async fn serve_connection<S>(state: Arc<api::AppState>, stream: S, peer: IpAddr, sd: Shutdown)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
    });
    let idle = state.settings.idle_timeout;
    let svc_state = state.clone();
    let svc_activity = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let state = svc_state.clone();
        let activity = svc_activity.clone();
        async move {
            activity.in_flight.fetch_add(1, Ordering::SeqCst);
            let timeout = state.settings.request_timeout;
            let resp =
                match tokio::time::timeout(timeout, api::handle(state.clone(), req, peer)).await {
                    Ok(r) => r,
                    Err(_) => api::timeout_response(&state.metrics),
                };
            *activity.last.lock() = Instant::now();
            activity.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        // While a request is in flight the idle clock does not run.
        let deadline = if activity.in_flight.load(Ordering::SeqCst) > 0 {
            Instant::now() + idle
        } else {
            *activity.last.lock() + idle
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    // Client-side trouble (reset, malformed request): nothing to report beyond a kind.
                    tracing::debug!(error.kind = if e.is_timeout() { "timeout" } else { "connection" }, "connection ended");
                }
                break;
            }
            () = sd.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(deadline), if !closing => {
                if activity.in_flight.load(Ordering::SeqCst) == 0
                    && activity.last.lock().elapsed() >= idle
                {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
