//! Push notifications: payloads, gorush gateway bodies, UnifiedPush, and the bounded, retrying
//! dispatcher that never blocks the DHT.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use tokio::sync::{Semaphore, mpsc};
use waypost_net::shutdown::Shutdown;
use waypost_protocol::redact::PushToken;

use crate::config::{PushFormat, Timers};
use crate::metrics::{Metrics, Outcome, Platform};
use crate::value::{Key, Value};

/// Time to live of a push, seconds.
pub const PUSH_TTL_S: u64 = 86_400;

/// A subscriber's platform, as given in SUBSCRIBE (`android`, `ios`, `unifiedpush`, else none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushPlatform {
    /// Unknown or empty: sent like iOS.
    None,
    /// Firebase, through the gateway.
    Android,
    /// APNs, through the gateway.
    Ios,
    /// Direct POST to the subscriber's endpoint URL.
    UnifiedPush,
}

impl PushPlatform {
    /// Parses the SUBSCRIBE `platform` string.
    pub fn parse(s: &str) -> Self {
        match s {
            "android" => Self::Android,
            "ios" => Self::Ios,
            "unifiedpush" => Self::UnifiedPush,
            _ => Self::None,
        }
    }

    /// The persisted integer (0 none, 1 android, 2 ios, 3 unifiedpush).
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Android => 1,
            Self::Ios => 2,
            Self::UnifiedPush => 3,
        }
    }

    /// Inverse of [`Self::code`].
    pub fn from_code(c: u64) -> Self {
        match c {
            1 => Self::Android,
            2 => Self::Ios,
            3 => Self::UnifiedPush,
            _ => Self::None,
        }
    }

    fn metric(self) -> Platform {
        match self {
            Self::Android => Platform::Android,
            Self::Ios | Self::None => Platform::Ios,
            Self::UnifiedPush => Platform::UnifiedPush,
        }
    }
}

/// Who gets a push.
#[derive(Clone)]
pub struct PushTarget {
    /// Device token or UnifiedPush endpoint URL.
    pub token: PushToken,
    /// Platform.
    pub platform: PushPlatform,
    /// Topic (empty: the server's bundle id).
    pub topic: String,
}

/// One push to deliver.
#[derive(Clone)]
pub struct PushJob {
    /// Recipient.
    pub target: PushTarget,
    /// The data object.
    pub data: Map<String, Json>,
    /// High priority.
    pub high: bool,
    /// A lease "timeout" push.
    pub timeout: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The data object for a value callback (spec B.10). Returns the data and whether it is high
/// priority.
pub fn value_payload(
    format: PushFormat,
    key: &Key,
    client_id: &str,
    session_id: &str,
    t_ms: u64,
    values: &[Value],
    expired: bool,
) -> (Map<String, Json>, bool) {
    let mut m = Map::new();
    m.insert("key".into(), Json::String(hex::encode(key)));
    m.insert("to".into(), Json::String(client_id.to_owned()));
    m.insert("t".into(), json!(t_ms));
    m.insert("s".into(), Json::String(session_id.to_owned()));
    let ids = values
        .iter()
        .map(|v| v.id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    match format {
        PushFormat::V2 => {
            if expired && values.len() < 2 {
                m.insert("exp".into(), Json::String(ids));
            }
        }
        PushFormat::V4 => {
            let pts = values
                .iter()
                .map(|v| v.push_type.as_str())
                .collect::<Vec<_>>()
                .join(",");
            if expired && values.len() < 2 {
                m.insert("exp".into(), Json::String(ids.clone()));
            }
            m.insert("ids".into(), Json::String(ids));
            m.insert("pt".into(), Json::String(pts));
        }
    }
    let high = !expired && values.iter().all(|v| v.priority == 0);
    (m, high)
}

/// The data object of a lease timeout push (`vid` for permanent puts).
pub fn timeout_payload(
    key: &Key,
    client_id: &str,
    session_id: &str,
    vid: Option<u64>,
) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("timeout".into(), Json::String(hex::encode(key)));
    m.insert("to".into(), Json::String(client_id.to_owned()));
    m.insert("s".into(), Json::String(session_id.to_owned()));
    if let Some(vid) = vid {
        m.insert("vid".into(), Json::String(vid.to_string()));
    }
    m
}

/// The gorush request body `{"notifications":[N]}` for Android, iOS and "none" (spec B.10).
pub fn gateway_body(format: PushFormat, job: &PushJob, bundle_id: &str, now_s: u64) -> Json {
    let mut n = Map::new();
    n.insert("tokens".into(), json!([job.target.token.expose()]));
    n.insert("data".into(), Json::Object(job.data.clone()));
    match job.target.platform {
        PushPlatform::Android => {
            n.insert("platform".into(), json!(2));
            let prio = if job.high { "high" } else { "normal" };
            match format {
                PushFormat::V2 => {
                    n.insert("priority".into(), json!(prio));
                    n.insert("time_to_live".into(), json!(PUSH_TTL_S));
                }
                PushFormat::V4 => {
                    n.insert(
                        "android".into(),
                        json!({"priority": prio, "ttl": format!("{PUSH_TTL_S}s")}),
                    );
                }
            }
        }
        PushPlatform::Ios | PushPlatform::None | PushPlatform::UnifiedPush => {
            n.insert("platform".into(), json!(1));
            let high = job.high || (format == PushFormat::V4 && job.timeout);
            n.insert("expiration".into(), json!(now_s + PUSH_TTL_S));
            let topic = if job.target.topic.is_empty() {
                bundle_id
            } else {
                job.target.topic.as_str()
            };
            if !topic.is_empty() {
                n.insert("topic".into(), json!(topic));
            }
            if high {
                n.insert("priority".into(), json!("high"));
                n.insert("push_type".into(), json!("alert"));
                n.insert("alert".into(), json!({"title": "hello"}));
                n.insert("mutable_content".into(), json!(true));
            } else {
                n.insert("priority".into(), json!("normal"));
                n.insert("push_type".into(), json!("background"));
                n.insert("content_available".into(), json!(true));
            }
        }
    }
    json!({ "notifications": [Json::Object(n)] })
}

/// Queues pushes for delivery. Cloning shares the queue.
#[derive(Clone)]
pub struct Pusher {
    tx: mpsc::Sender<PushJob>,
    metrics: Metrics,
}

impl Pusher {
    /// Starts the dispatcher task and returns the queue handle.
    pub fn start(
        gateway: Option<String>,
        bundle_id: String,
        format: PushFormat,
        timers: Timers,
        capacity: usize,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        waypost_net::tls::install_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent("RESTinio client")
            .build()
            .unwrap_or_default();
        let d = Dispatcher {
            client,
            gateway: gateway.map(|g| format!("{g}/api/push")),
            bundle_id,
            format,
            timers,
            metrics: metrics.clone(),
        };
        let sd = shutdown.clone();
        tokio::spawn(d.run(rx, sd));
        Self { tx, metrics }
    }

    /// Queues a push; drops it (and counts it) when the queue is full. Never waits.
    pub fn enqueue(&self, job: PushJob) {
        let platform = job.target.platform.metric();
        if self.tx.try_send(job).is_err() {
            self.metrics.push(platform, Outcome::Dropped);
        }
    }
}

struct Dispatcher {
    client: reqwest::Client,
    gateway: Option<String>,
    bundle_id: String,
    format: PushFormat,
    timers: Timers,
    metrics: Metrics,
}

/// Pushes in flight at once.
const CONCURRENCY: usize = 64;

impl Dispatcher {
    async fn run(self, mut rx: mpsc::Receiver<PushJob>, shutdown: Shutdown) {
        let me = Arc::new(self);
        let sem = Arc::new(Semaphore::new(CONCURRENCY));
        loop {
            let job = tokio::select! {
                _ = shutdown.cancelled() => return,
                j = rx.recv() => match j { Some(j) => j, None => return },
            };
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let me = me.clone();
            tokio::spawn(async move {
                me.deliver(job).await;
                drop(permit);
            });
        }
    }

    async fn deliver(&self, job: PushJob) {
        let platform = job.target.platform.metric();
        let mut delay = self.timers.push_backoff;
        for attempt in 0..self.timers.push_attempts.max(1) {
            if attempt > 0 {
                self.metrics.push(platform, Outcome::Retried);
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            let req = match job.target.platform {
                PushPlatform::UnifiedPush => {
                    let url = job.target.token.expose();
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        self.metrics.push(platform, Outcome::Skipped);
                        return;
                    }
                    let clear = Json::Object(job.data.clone()).to_string();
                    let req = self
                        .client
                        .post(url.as_str())
                        .header("Content-Type", "application/json")
                        .header("TTL", PUSH_TTL_S.to_string())
                        .header("Urgency", if job.high { "high" } else { "normal" });
                    match crate::webpush::UaKeys::from_topic(&job.target.topic) {
                        Some(ua) => {
                            let Some(body) = crate::webpush::encrypt(&ua, clear.as_bytes()) else {
                                self.metrics.push(platform, Outcome::Failed);
                                return;
                            };
                            req.header("Content-Encoding", "aes128gcm").body(body)
                        }
                        None => req.body(clear),
                    }
                }
                _ => {
                    let Some(gw) = &self.gateway else {
                        self.metrics.push(platform, Outcome::Skipped);
                        return;
                    };
                    let body = gateway_body(self.format, &job, &self.bundle_id, now_ms() / 1000);
                    self.client
                        .post(gw.as_str())
                        .header("Content-Type", "application/json")
                        .header("Accept", "*/*")
                        .body(body.to_string())
                }
            };
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.metrics.push(platform, Outcome::Delivered);
                    return;
                }
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    if !(s == 429 || s >= 500) {
                        tracing::warn!(status = s, "push gateway refused a notification");
                        self.metrics.push(platform, Outcome::Failed);
                        return;
                    }
                }
                Err(_) => {}
            }
        }
        tracing::warn!("push delivery failed after retries");
        self.metrics.push(platform, Outcome::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(p: PushPlatform, topic: &str) -> PushTarget {
        PushTarget {
            token: PushToken::new("TOK".into()),
            platform: p,
            topic: topic.into(),
        }
    }

    #[test]
    fn android_bodies_both_formats() {
        let key = [0xe2; 20];
        let v = Value::plain(1, 0, b"z".to_vec(), "");
        let (data, high) = value_payload(
            PushFormat::V2,
            &key,
            "client-1",
            "sess-1",
            1795592026184,
            &[v],
            false,
        );
        assert!(high);
        let job = PushJob {
            target: target(PushPlatform::Android, ""),
            data,
            high,
            timeout: false,
        };
        let b = gateway_body(PushFormat::V2, &job, "", 0);
        let expect = json!({"notifications":[{"data":{"key":hex::encode(key),"s":"sess-1","t":1795592026184u64,"to":"client-1"},
            "platform":2,"priority":"high","time_to_live":86400,"tokens":["TOK"]}]});
        assert_eq!(b, expect);
        let b4 = gateway_body(PushFormat::V4, &job, "", 0);
        assert_eq!(
            b4["notifications"][0]["android"],
            json!({"priority":"high","ttl":"86400s"})
        );
        assert!(b4["notifications"][0].get("priority").is_none());
    }

    #[test]
    fn ios_priority_rules() {
        let key = [1; 20];
        let v = Value {
            priority: 1,
            ..Value::plain(9, 0, vec![], "")
        };
        let (data, high) = value_payload(
            PushFormat::V2,
            &key,
            "c",
            "s",
            5,
            std::slice::from_ref(&v),
            false,
        );
        assert!(!high, "priority 1 value ⇒ normal");
        let job = PushJob {
            target: target(PushPlatform::Ios, ""),
            data,
            high,
            timeout: false,
        };
        let b = gateway_body(PushFormat::V2, &job, "com.example.app", 1000);
        let n = &b["notifications"][0];
        assert_eq!(n["platform"], 1);
        assert_eq!(n["priority"], "normal");
        assert_eq!(n["push_type"], "background");
        assert_eq!(n["content_available"], true);
        assert_eq!(n["expiration"], 1000 + 86400);
        assert_eq!(n["topic"], "com.example.app");
        let (exp, high) = value_payload(
            PushFormat::V2,
            &key,
            "c",
            "s",
            5,
            std::slice::from_ref(&v),
            true,
        );
        assert!(!high);
        assert_eq!(exp["exp"], "9");
        let (exp4, _) = value_payload(PushFormat::V4, &key, "c", "s", 5, &[v.clone(), v], true);
        assert!(exp4.get("exp").is_none());
        assert_eq!(exp4["ids"], "9,9");
    }
}
