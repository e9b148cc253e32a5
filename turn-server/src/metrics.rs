//! Prometheus metrics. Labels are typed enums only: no address, port or username ever.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Client transport of an allocation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

/// Relay transport (UDP or RFC 6062 TCP).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Relay {
    /// UDP relay.
    Udp,
    /// RFC 6062 TCP relay.
    Tcp,
}

/// Direction of relayed traffic.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    /// Client to peer.
    ToPeer,
    /// Peer to client.
    ToClient,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Refusal {
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// Stale nonce (438).
    StaleNonce,
    /// 401 rate limit hit: answer dropped.
    RateLimited,
    /// Peer address denied (403).
    PeerDenied,
    /// Quota (486/508).
    Quota,
    /// Malformed input dropped.
    Malformed,
    /// Unauthenticated UDP answer dropped because it would be larger than the request.
    Amplification,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabel {
    relay: Relay,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    reason: Refusal,
}

/// The server's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    allocations: Family<RelayLabel, Gauge>,
    allocations_total: Family<RelayLabel, Counter>,
    connections: Family<TransportLabel, Gauge>,
    packets: Family<DirectionLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    refused: Family<RefusalLabel, Counter>,
    /// Cached handles for the hot path.
    pkts_to_peer: Counter,
    pkts_to_client: Counter,
    bytes_to_peer: Counter,
    bytes_to_client: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register("allocations", "Live allocations", m.allocations.clone());
        reg.register(
            "allocations_created",
            "Allocations created",
            m.allocations_total.clone(),
        );
        reg.register(
            "client_connections",
            "Open TCP/TLS client connections",
            m.connections.clone(),
        );
        reg.register("relayed_packets", "Relayed packets", m.packets.clone());
        reg.register("relayed_bytes", "Relayed payload bytes", m.bytes.clone());
        reg.register("refused", "Refused or dropped requests", m.refused.clone());
        let mut m = m;
        m.pkts_to_peer = m
            .packets
            .get_or_create(&DirectionLabel {
                direction: Direction::ToPeer,
            })
            .clone();
        m.pkts_to_client = m
            .packets
            .get_or_create(&DirectionLabel {
                direction: Direction::ToClient,
            })
            .clone();
        m.bytes_to_peer = m
            .bytes
            .get_or_create(&DirectionLabel {
                direction: Direction::ToPeer,
            })
            .clone();
        m.bytes_to_client = m
            .bytes
            .get_or_create(&DirectionLabel {
                direction: Direction::ToClient,
            })
            .clone();
        m
    }

    /// Counts relayed payload.
    pub fn relayed(&self, dir: Direction, bytes: usize) {
        let (p, b) = match dir {
            Direction::ToPeer => (&self.pkts_to_peer, &self.bytes_to_peer),
            Direction::ToClient => (&self.pkts_to_client, &self.bytes_to_client),
        };
        p.inc();
        b.inc_by(u64::try_from(bytes).unwrap_or(0));
    }

    /// Adds `pkts` relayed packets carrying `bytes` payload bytes.
    pub(crate) fn add_relayed(&self, dir: Direction, pkts: u64, bytes: u64) {
        if pkts == 0 {
            return;
        }
        let (p, b) = match dir {
            Direction::ToPeer => (&self.pkts_to_peer, &self.bytes_to_peer),
            Direction::ToClient => (&self.pkts_to_client, &self.bytes_to_client),
        };
        p.inc_by(pkts);
        b.inc_by(bytes);
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: Refusal) {
        self.refused.get_or_create(&RefusalLabel { reason }).inc();
    }

    /// An allocation was created.
    pub fn allocation_opened(&self, relay: Relay) {
        self.allocations.get_or_create(&RelayLabel { relay }).inc();
        self.allocations_total
            .get_or_create(&RelayLabel { relay })
            .inc();
    }

    /// An allocation ended.
    pub fn allocation_closed(&self, relay: Relay) {
        self.allocations.get_or_create(&RelayLabel { relay }).dec();
    }

    /// A client stream opened or closed.
    pub fn connection(&self, transport: Transport, open: bool) {
        let g = self
            .connections
            .get_or_create(&TransportLabel { transport });
        if open {
            g.inc();
        } else {
            g.dec();
        }
    }
}
