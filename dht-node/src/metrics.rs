//! Prometheus metrics (typed labels only: no ids, keys or addresses).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use waypost_protocol::dht::Stats;

/// Address family label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum AddrFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// Node state label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum NodeState {
    /// Good.
    Good,
    /// Dubious.
    Dubious,
    /// Expired.
    Expired,
}

/// Request type label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RequestType {
    /// ping
    Ping,
    /// find
    Find,
    /// get
    Get,
    /// put
    Put,
    /// listen
    Listen,
    /// refresh
    Refresh,
    /// update
    Update,
}

/// Request outcome label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RequestOutcome {
    /// Answered.
    Ok,
    /// Answered with an error.
    Error,
    /// Dropped by the rate limiter.
    RateLimited,
}

/// Labels of the nodes gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Family.
    pub family: AddrFamily,
    /// State.
    pub state: NodeState,
}

/// Labels of the requests counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Type.
    pub r#type: RequestType,
    /// Outcome.
    pub outcome: RequestOutcome,
}

/// The node's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    nodes: Family<NodeLabels, Gauge>,
    values: Gauge,
    bytes: Gauge,
    listeners: Gauge,
    requests: Family<RequestLabels, Counter>,
    dropped: Counter,
    pub(crate) sent: Counter,
    last: std::sync::Arc<std::sync::Mutex<([[u64; 3]; 7], u64)>>,
}

const TYPES: [RequestType; 7] = [
    RequestType::Ping,
    RequestType::Find,
    RequestType::Get,
    RequestType::Put,
    RequestType::Listen,
    RequestType::Refresh,
    RequestType::Update,
];
const OUTCOMES: [RequestOutcome; 3] = [
    RequestOutcome::Ok,
    RequestOutcome::Error,
    RequestOutcome::RateLimited,
];

impl Metrics {
    /// Creates the metrics and registers them (prefix `dht`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("dht");
        r.register("nodes", "Known nodes by family and state", m.nodes.clone());
        r.register(
            "stored_values",
            "Values stored by this node",
            m.values.clone(),
        );
        r.register(
            "stored_bytes",
            "Bytes of values stored by this node",
            m.bytes.clone(),
        );
        r.register(
            "remote_listeners",
            "Listeners registered by other nodes",
            m.listeners.clone(),
        );
        r.register(
            "requests",
            "Incoming requests by type and outcome",
            m.requests.clone(),
        );
        r.register(
            "dropped_datagrams",
            "Datagrams dropped (malformed, other network, martian)",
            m.dropped.clone(),
        );
        r.register("sent_datagrams", "Datagrams sent", m.sent.clone());
        m
    }

    pub(crate) fn update(&self, s: &Stats) {
        for (fam, c) in [(AddrFamily::Ipv4, s.ipv4), (AddrFamily::Ipv6, s.ipv6)] {
            for (state, n) in [
                (NodeState::Good, c.good),
                (NodeState::Dubious, c.dubious),
                (NodeState::Expired, c.expired),
            ] {
                self.nodes
                    .get_or_create(&NodeLabels { family: fam, state })
                    .set(n as i64);
            }
        }
        self.values.set(s.values as i64);
        self.bytes.set(s.bytes as i64);
        self.listeners.set(s.listeners as i64);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        for (ti, t) in TYPES.iter().enumerate() {
            for (oi, o) in OUTCOMES.iter().enumerate() {
                let d = s.queries[ti][oi].saturating_sub(last.0[ti][oi]);
                if d > 0 {
                    self.requests
                        .get_or_create(&RequestLabels {
                            r#type: *t,
                            outcome: *o,
                        })
                        .inc_by(d);
                }
            }
        }
        self.dropped.inc_by(s.dropped.saturating_sub(last.1));
        *last = (s.queries, s.dropped);
    }
}
