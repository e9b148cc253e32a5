//! Prometheus counters. Labels are typed enums only: no name, address or IP can become a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which API operation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Op {
    /// `GET /name/{name}` (and its `/publickey`, `/signature` variants).
    Lookup,
    /// `GET /addr/{addr}`.
    Reverse,
    /// `POST /name/{name}`.
    Register,
    /// Anything else (unknown route or method).
    Other,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// Lookup hit.
    Found,
    /// Lookup miss (404).
    NotFound,
    /// Name or address syntax invalid (400).
    Invalid,
    /// Body missing, not JSON, or a field missing (400).
    BadRequest,
    /// Body larger than the cap (413).
    TooLarge,
    /// Public key not importable (400).
    BadKey,
    /// Key ID differs from `addr` (401).
    KeyMismatch,
    /// Signature does not verify (401).
    BadSignature,
    /// New registration stored.
    Registered,
    /// Identical registration repeated (200).
    Idempotent,
    /// Name held by another address (409).
    NameTaken,
    /// Address already holds another name (403).
    AddrHasName,
    /// POST rate limit hit (429).
    RateLimited,
    /// Store failure (500/503).
    StoreError,
    /// Unknown route (404) or method (405).
    NoRoute,
    /// Request timed out (408).
    Timeout,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    op: Op,
    outcome: Outcome,
}

/// The name server's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    connections: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under `registry` (prefix as the registry has).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "nameserver_requests",
            "Name server requests by operation and outcome",
            m.requests.clone(),
        );
        registry.register(
            "nameserver_connections",
            "Open client connections",
            m.connections.clone(),
        );
        m
    }

    /// Counts one request.
    pub fn count(&self, op: Op, outcome: Outcome) {
        self.requests.get_or_create(&Labels { op, outcome }).inc();
    }

    /// The current count for `(op, outcome)` (tests and benchmarks).
    pub fn get(&self, op: Op, outcome: Outcome) -> u64 {
        self.requests.get_or_create(&Labels { op, outcome }).get()
    }

    pub(crate) fn connections(&self) -> &Gauge {
        &self.connections
    }
}
