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

/// Every route, in [`Route`] order.
const ROUTES: [Route; 11] = [
    Route::Info,
    Route::Stats,
    Route::Get,
    Route::Put,
    Route::PutPermanent,
    Route::Listen,
    Route::Subscribe,
    Route::Unsubscribe,
    Route::Options,
    Route::PingPush,
    Route::Unknown,
];

/// The proxy's metrics.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RouteLabel, Counter>,
    /// The request counter of each route, taken from `requests` once (no per-request lookup).
    route_counters: std::sync::Arc<[Counter; 11]>,
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
    /// DHT gets started for `GET /key/{h}` (concurrent GETs of a key share one).
    pub dht_gets: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests: Family<RouteLabel, Counter> = Family::default();
        let route_counters = std::sync::Arc::new(
            ROUTES.map(|route| requests.get_or_create(&RouteLabel { route }).clone()),
        );
        Self {
            requests,
            route_counters,
            refused: Family::default(),
            pushes: Family::default(),
            listen_streams: Gauge::default(),
            subscriptions: Gauge::default(),
            push_keys: Gauge::default(),
            permanent_puts: Gauge::default(),
            dht_gets: Counter::default(),
        }
    }
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
        reg.register(
            "dht_gets",
            "DHT gets started for GET requests (concurrent GETs of a key share one)",
            self.dht_gets.clone(),
        );
    }

    /// Counts a request.
    pub fn request(&self, route: Route) {
        self.route_counters[route as usize].inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counters_are_the_family_counters() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let m = Metrics::default();
        m.request(Route::Get);
        m.request(Route::Get);
        let c = m
            .requests
            .get_or_create(&RouteLabel { route: Route::Get })
            .get();
        assert_eq!(c, 2);
    }
}
