//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! It is off or bound to loopback by default. Metrics use prometheus-client with typed label
//! enums only, so no label can carry an address or identifier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;

use crate::shutdown::Shutdown;

/// The content type of the Prometheus text format (version 0.0.4 is what scrapers expect from
/// the OpenMetrics-compatible text prometheus-client writes).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// State shared between a server and its admin endpoint.
#[derive(Clone)]
pub struct Admin {
    registry: Arc<Mutex<Registry>>,
    ready: Arc<AtomicBool>,
}

impl Admin {
    /// Wraps a registry; the server is not ready until [`Self::set_ready`] is called.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(Mutex::new(registry)),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the server ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Registers more metrics after construction.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock())
    }

    /// Renders the metrics in the Prometheus/OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail for well-formed metrics.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }

    /// The admin router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// Serves the admin router on `listener` until shutdown.
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: Shutdown) {
        let router = self.router();
        let res = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::warn!(error.kind = ?e.kind(), "admin listener stopped");
        }
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        admin.render(),
    )
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
    enum Outcome {
        Ok,
        Refused,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        outcome: Outcome,
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut reg = Registry::with_prefix("waypost_test");
        let fam = Family::<Labels, Counter>::default();
        reg.register("requests", "Requests by outcome", fam.clone());
        fam.get_or_create(&Labels {
            outcome: Outcome::Ok,
        })
        .inc_by(3);
        fam.get_or_create(&Labels {
            outcome: Outcome::Refused,
        })
        .inc();
        let admin = Admin::new(reg);
        let sd = Shutdown::new();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(admin.clone().serve(l, sd.clone()));

        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        let body = m.split("\r\n\r\n").nth(1).unwrap();
        assert_valid_prometheus_text(body);
        assert!(
            body.contains("waypost_test_requests_total{outcome=\"Ok\"} 3"),
            "{body}"
        );
        assert!(
            body.contains("waypost_test_requests_total{outcome=\"Refused\"} 1"),
            "{body}"
        );

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        admin.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));

        sd.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// A small validator of the exposition format: every line is a comment, `# EOF`, or
    /// `name{labels} value` with a numeric value, and every sample's family has TYPE and HELP.
    fn assert_valid_prometheus_text(body: &str) {
        let mut typed = std::collections::HashSet::new();
        assert!(body.trim_end().ends_with("# EOF"), "missing # EOF");
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with("# HELP ") || line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect("sample line");
            value.parse::<f64>().expect("numeric value");
            let name = name_labels.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name {name}"
            );
            let family = name.trim_end_matches("_total").trim_end_matches("_created");
            assert!(typed.contains(family), "sample {name} without TYPE");
        }
    }
}
