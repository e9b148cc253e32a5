//! Prometheus metrics with typed labels only.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Request kinds.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(missing_docs)]
pub enum Route {
    Info,
    Stats,
    Get,
    Put,
    PutPermanent,
    Listen,
    Subscribe,
    Unsubscribe,
    Options,
    PingPush,
    Unknown,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(missing_docs)]
pub enum Reason {
    BadRequest,
    BodyTooLarge,
    ValueTooLarge,
    BadSignature,
    PutFailed,
    PerIpLimit,
    GlobalCap,
}

/// Push platforms.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(missing_docs)]
pub enum Platform {
    Android,
    Ios,
    UnifiedPush,
}

/// Push outcomes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(missing_docs)]
pub enum Outcome {
    Delivered,
    Retried,
    Failed,
    Dropped,
    Skipped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabel {
    platform: Platform,
    outcome: Outcome,
}

/// The proxy's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    requests: Family<RouteLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    pushes: Family<PushLabel, Counter>,
    /// Open listen streams.
    pub listen_streams: Gauge,
    /// Push subscriptions.
    pub subscriptions: Gauge,
    /// Keys with a shared DHT listen for push subscribers.
    pub push_keys: Gauge,
    /// Permanent puts.
    pub permanent_puts: Gauge,
}

impl Metrics {
    /// Registers every metric in `reg`.
    pub fn register(&self, reg: &mut Registry) {
        reg.register("requests", "HTTP requests by route", self.requests.clone());
        reg.register(
            "refused",
            "Requests refused by reason",
            self.refused.clone(),
        );
        reg.register(
            "pushes",
            "Push notifications by platform and outcome",
            self.pushes.clone(),
        );
        reg.register(
            "listen_streams",
            "Open listen streams",
            self.listen_streams.clone(),
        );
        reg.register(
            "subscriptions",
            "Push subscriptions",
            self.subscriptions.clone(),
        );
        reg.register(
            "push_keys",
            "Keys listened to for push subscribers",
            self.push_keys.clone(),
        );
        reg.register(
            "permanent_puts",
            "Permanent puts kept alive",
            self.permanent_puts.clone(),
        );
    }

    /// Counts a request.
    pub fn request(&self, route: Route) {
        self.requests.get_or_create(&RouteLabel { route }).inc();
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: Reason) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a push outcome.
    pub fn push(&self, platform: Platform, outcome: Outcome) {
        self.pushes
            .get_or_create(&PushLabel { platform, outcome })
            .inc();
    }
}
