//! OpenDHT proxy REST API with push notifications, on top of a DHT node.
//!
//! - [`value`]: the proxy's value model and JSON form (spec A.8).
//! - [`backend`]: the [`backend::DhtBackend`] trait the proxy uses and an in-memory DHT for tests.
//! - [`gets`]: one-shot gets coalesced into shared DHT gets that start after the request.
//! - [`http`]: the routes (spec B.2–B.11).
//! - [`proxy`]: permanent puts, push subscriptions (one DHT listen per key), leases, limits.
//! - [`push`]: gateway bodies (gorush, 2.4 and 4.x formats), UnifiedPush, the dispatcher.
//! - [`store`]: redb persistence of subscriptions and permanent puts.
//! - [`webpush`]: RFC 8291 encryption of UnifiedPush bodies for `p256dh|auth` topics.

pub mod backend;
pub mod config;
pub mod convert;
pub mod error;
pub mod feed;
pub mod gets;
pub mod http;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod push;
pub mod server;
pub mod store;
pub mod value;
pub mod webpush;

use std::time::Duration;

use tokio::net::TcpListener;
use waypost_net::shutdown::Shutdown;
use waypost_net::tls::ReloadableTls;

pub use crate::config::{ProxyConfig, ProxyLayer, ProxyOptions};
pub use crate::error::ProxyError;
pub use crate::proxy::Proxy;

/// The sockets a proxy serves on, bound before [`serve`].
pub struct Listeners {
    /// Plain HTTP.
    pub http: Option<TcpListener>,
    /// HTTPS and its certificate.
    pub tls: Option<(TcpListener, ReloadableTls)>,
}

/// Serves the proxy's routes on the given listeners until `shutdown`, then gives open
/// connections (listen streams never end by themselves) a short grace period.
pub async fn serve(
    proxy: Proxy,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ProxyError> {
    let router = http::router(proxy.clone());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = listeners.http {
        tasks.spawn(server::serve_plain(
            l,
            router.clone(),
            proxy.clone(),
            shutdown.clone(),
        ));
    }
    if let Some((l, tls)) = listeners.tls {
        tasks.spawn(tls_accept(l, tls, router, proxy, shutdown.clone()));
    }
    shutdown.cancelled().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

/// Accepts TLS connections until shutdown; each is served like a plain one (same routes,
/// listen-stream path and idle timeout) once its handshake completes.
async fn tls_accept(
    l: TcpListener,
    tls: ReloadableTls,
    router: axum::Router,
    proxy: Proxy,
    sd: Shutdown,
) {
    loop {
        let (tcp, addr) = tokio::select! {
            _ = sd.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let (router, proxy) = (router.clone(), proxy.clone());
        tokio::spawn(async move {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            {
                server::connection(s, addr, router, proxy).await;
            }
        });
    }
}
