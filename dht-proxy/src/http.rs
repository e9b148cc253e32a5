//! The REST routes (spec B.2–B.11).

use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Router};
use futures_util::StreamExt as _;
use serde_json::{Value as Json, json};
use sha1::Digest as _;

use crate::backend::{FamilyStatus, NodeStatus};
use crate::metrics::{Reason, Route};
use crate::proxy::{PermOutcome, Proxy, Refusal, SubscribeOutcome, random_id};
use crate::push::{PushPlatform, now_ms};
use crate::store::PushInfo;
use crate::value::{Key, MAX_VALUE_SIZE, Value};

const ERR_MISSING: &str = "{\"err\":\"Missing parameters\"}";
const ERR_JSON: &str = "{\"err:\":\"Incorrect JSON\"}";
const ERR_NO_TOKEN: &str = "{\"err\":\"No token\"}";
const ERR_PUT: &str = "{\"err\":\"Put failed\"}";
const ERR_TOO_LARGE: &str = "{\"err\":\"Request too large\"}";
pub(crate) const ERR_PER_IP: &str = "{\"err\":\"Too many requests from this address\"}";
pub(crate) const ERR_BUSY: &str = "{\"err\":\"Server busy\"}";

/// The DHT key of a path segment: its first 40 hex digits, else SHA-1 of the segment.
pub fn parse_key(seg: &str) -> Key {
    let b = seg.as_bytes();
    if b.len() >= 40 {
        let mut k = [0u8; 20];
        if hex::decode_to_slice(&b[..40], &mut k).is_ok() && k != [0u8; 20] {
            return k;
        }
    }
    sha1::Sha1::digest(b).into()
}

/// The router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(proxy: Proxy) -> Router {
    let key_routes = || -> MethodRouter<Proxy> { get(get_key).post(put_key).fallback(key_other) };
    Router::new()
        .route("/", get(node_info).fallback(not_implemented))
        .route("/node/info", get(node_info).fallback(not_implemented))
        .route("/node/stats", get(node_stats).fallback(not_implemented))
        .route("/node/pingPush", post(ping_push).fallback(not_implemented))
        .route("/key/{h}", key_routes())
        .route(
            "/key/{h}/listen",
            get(listen).options(options).fallback(not_implemented),
        )
        .route("/key/{h}/options", get(options).fallback(not_implemented))
        .route("/{h}", key_routes().options(options))
        .fallback(not_implemented)
        .with_state(proxy)
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn refusal(proxy: &Proxy, r: Refusal) -> Response {
    let _ = proxy;
    match r {
        Refusal::PerIp => json_response(StatusCode::TOO_MANY_REQUESTS, ERR_PER_IP),
        Refusal::Global => json_response(StatusCode::SERVICE_UNAVAILABLE, ERR_BUSY),
    }
}

async fn not_implemented(State(p): State<Proxy>) -> Response {
    p.count_request();
    p.metrics().request(Route::Unknown);
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_IMPLEMENTED;
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn family_json(f: &FamilyStatus) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("good".into(), json!(f.good));
    m.insert("dubious".into(), json!(f.dubious));
    m.insert("incoming".into(), json!(f.incoming));
    if f.table_depth > 1 {
        m.insert("table_depth".into(), json!(f.table_depth));
        m.insert(
            "network_size_estimation".into(),
            json!(8u64 << f.table_depth.min(56)),
        );
    }
    Json::Object(m)
}

fn node_info_json(s: &NodeStatus) -> serde_json::Map<String, Json> {
    let mut m = serde_json::Map::new();
    m.insert("ipv4".into(), family_json(&s.ipv4));
    m.insert("ipv6".into(), family_json(&s.ipv6));
    m.insert("node_id".into(), json!(hex::encode(s.node_id)));
    m.insert("ops".into(), json!(s.ops));
    m
}

fn peer_ip(ci: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    ci.map(|Extension(ConnectInfo(a))| match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    })
}

async fn node_info(
    State(p): State<Proxy>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    p.count_request();
    p.metrics().request(Route::Info);
    let mut m = node_info_json(&p.backend().status());
    if let Some(ip) = ci.map(|Extension(ConnectInfo(a))| a.ip()) {
        m.insert("public_ip".into(), json!(ip.to_string()));
    }
    let mut body = Json::Object(m).to_string();
    body.push('\n');
    json_response(StatusCode::OK, body)
}

async fn node_stats(State(p): State<Proxy>) -> Response {
    p.count_request();
    p.metrics().request(Route::Stats);
    let (put_keys, perms, tokens, _) = p.counts();
    let body = json!({
        "listenCount": p.listen_count(),
        "putCount": put_keys,
        "totalPermanentPuts": perms,
        "pushListenersCount": tokens,
        "requestRate": p.request_rate(),
        "nodeInfo": Json::Object(node_info_json(&p.backend().status())),
        "serverStartTime": p.inner.started_s,
        "lastUpdated": now_ms() / 1000,
    });
    json_response(StatusCode::OK, format!("{body}\n"))
}

async fn options(State(p): State<Proxy>) -> Response {
    p.count_request();
    p.metrics().request(Route::Options);
    let mut r = json_response(StatusCode::OK, Body::empty());
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, GET, POST, LISTEN"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// How long a get waits for its DHT get before sending the head (a quick answer then goes out
/// in one write; a slow search still gets its `200` head at once after this).
const GET_HEAD_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A streamed one-shot get: one chunk per DHT batch, one JSON line per value, signed values
/// that fail verification dropped, duplicates suppressed. Concurrent gets of one key share a
/// DHT get that started after they arrived (see [`crate::gets`]).
async fn get_stream(p: &Proxy, key: Key) -> Body {
    Body::from_stream(
        p.inner
            .gets
            .get_ready(key, GET_HEAD_WAIT)
            .await
            .map(Ok::<_, std::convert::Infallible>),
    )
}

async fn get_key(State(p): State<Proxy>, Path(h): Path<String>) -> Response {
    p.count_request();
    p.metrics().request(Route::Get);
    json_response(StatusCode::OK, get_stream(&p, parse_key(&h)).await)
}

async fn read_body(p: &Proxy, body: Body) -> Result<Bytes, Response> {
    match axum::body::to_bytes(body, p.inner.opts.limits.max_body).await {
        Ok(b) => Ok(b),
        Err(_) => {
            p.metrics().refused(Reason::BodyTooLarge);
            Err(json_response(StatusCode::PAYLOAD_TOO_LARGE, ERR_TOO_LARGE))
        }
    }
}

fn parse_push_info(obj: &serde_json::Map<String, Json>) -> PushInfo {
    let s = |k: &str| {
        obj.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    PushInfo {
        token: s("key"),
        client_id: s("client_id"),
        session_id: s("session_id"),
        platform: PushPlatform::parse(&s("platform")),
        topic: s("topic"),
    }
}

async fn put_key(State(p): State<Proxy>, Path(h): Path<String>, body: Body) -> Response {
    p.count_request();
    let key = parse_key(&h);
    let bytes = match read_body(&p, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        p.metrics().request(Route::Put);
        p.metrics().refused(Reason::BadRequest);
        return json_response(StatusCode::BAD_REQUEST, ERR_MISSING);
    }
    let parsed = serde_json::from_slice::<Json>(&bytes)
        .ok()
        .and_then(|j| Value::from_json(&j).ok());
    let Some((mut value, permanent)) = parsed else {
        p.metrics().request(Route::Put);
        p.metrics().refused(Reason::BadRequest);
        return json_response(StatusCode::BAD_REQUEST, ERR_JSON);
    };
    let permanent = match permanent {
        Some(Json::Bool(true)) => Some(None),
        Some(Json::Object(o)) if !o.is_empty() => {
            let info = parse_push_info(&o);
            Some((!info.token.is_empty()).then_some(info))
        }
        _ => None,
    };
    p.metrics().request(if permanent.is_some() {
        Route::PutPermanent
    } else {
        Route::Put
    });
    if value.size() > MAX_VALUE_SIZE {
        p.metrics().refused(Reason::ValueTooLarge);
        return json_response(StatusCode::BAD_GATEWAY, ERR_PUT);
    }
    if !value.is_acceptable() {
        p.metrics().refused(Reason::BadSignature);
        return json_response(StatusCode::BAD_GATEWAY, ERR_PUT);
    }
    match permanent {
        Some(push) => match p.put_permanent(key, value, push).await {
            PermOutcome::Stored(v) => json_response(StatusCode::OK, v.to_json_line(false)),
            PermOutcome::Failed => {
                p.metrics().refused(Reason::PutFailed);
                json_response(StatusCode::BAD_GATEWAY, ERR_PUT)
            }
            PermOutcome::Refused(r) => refusal(&p, r),
        },
        None => {
            if value.id == 0 {
                value.id = random_id();
            }
            let line = value.to_json_line(false);
            if p.backend().put(key, value, false).await {
                json_response(StatusCode::OK, line)
            } else {
                p.metrics().refused(Reason::PutFailed);
                json_response(StatusCode::BAD_GATEWAY, ERR_PUT)
            }
        }
    }
}

/// The listen stream: current values, then new and edited ones, `"expired":true` on expiry.
async fn listen(
    State(p): State<Proxy>,
    Path(h): Path<String>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    p.count_request();
    p.metrics().request(Route::Listen);
    let key = parse_key(&h);
    let ip = peer_ip(ci).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let slot = match p.acquire_stream(ip) {
        Ok(s) => s,
        Err(r) => return refusal(&p, r),
    };
    let (cursor, first) = crate::feed::Cursor::open(&p.inner.hub, key, p.backend());
    let queue: std::collections::VecDeque<Bytes> = first.into();
    let s =
        futures_util::stream::unfold((cursor, queue, slot), |(mut c, mut q, slot)| async move {
            loop {
                if let Some(b) = q.pop_front() {
                    return Some((Ok::<_, std::convert::Infallible>(b), (c, q, slot)));
                }
                q.extend(c.next().await?);
            }
        });
    json_response(StatusCode::OK, Body::from_stream(s))
}

/// SUBSCRIBE / UNSUBSCRIBE on `/key/{h}` and `/{h}`; anything else there is 501.
async fn key_other(
    State(p): State<Proxy>,
    Path(h): Path<String>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    match method.as_str() {
        "SUBSCRIBE" => subscribe(p, parse_key(&h), peer_ip(ci), req.into_body()).await,
        "UNSUBSCRIBE" => unsubscribe(p, parse_key(&h), req.into_body()).await,
        _ if method == Method::OPTIONS => not_implemented(State(p)).await,
        _ => not_implemented(State(p)).await,
    }
}

async fn subscribe(p: Proxy, key: Key, ip: Option<IpAddr>, body: Body) -> Response {
    p.count_request();
    p.metrics().request(Route::Subscribe);
    let bytes = match read_body(&p, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(Json::Object(obj)) = serde_json::from_slice::<Json>(&bytes).ok() else {
        p.metrics().refused(Reason::BadRequest);
        return json_response(StatusCode::BAD_REQUEST, ERR_JSON);
    };
    let info = parse_push_info(&obj);
    if info.token.is_empty() {
        p.metrics().refused(Reason::BadRequest);
        return json_response(StatusCode::BAD_REQUEST, ERR_NO_TOKEN);
    }
    let refresh = obj.get("refresh").and_then(Json::as_bool).unwrap_or(false);
    match p.subscribe(key, info, ip) {
        Ok(SubscribeOutcome::New) => json_response(StatusCode::OK, "{}\n"),
        Ok(SubscribeOutcome::Renewed) if refresh => json_response(
            StatusCode::OK,
            Body::from_stream(futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(Bytes::from_static(b"{}\n"))
            })),
        ),
        Ok(SubscribeOutcome::Renewed) => json_response(StatusCode::OK, get_stream(&p, key).await),
        Err(r) => refusal(&p, r),
    }
}

async fn unsubscribe(p: Proxy, key: Key, body: Body) -> Response {
    p.count_request();
    p.metrics().request(Route::Unsubscribe);
    let bytes = match read_body(&p, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(Json::Object(obj)) = serde_json::from_slice::<Json>(&bytes).ok() else {
        p.metrics().refused(Reason::BadRequest);
        return json_response(StatusCode::BAD_REQUEST, ERR_JSON);
    };
    let token = obj.get("key").and_then(Json::as_str).unwrap_or_default();
    if token.is_empty() {
        return not_implemented(State(p)).await;
    }
    let cid = obj
        .get("client_id")
        .and_then(Json::as_str)
        .unwrap_or_default();
    p.unsubscribe(&key, token, cid);
    json_response(StatusCode::OK, Body::empty())
}

async fn ping_push(State(p): State<Proxy>, body: Body) -> Response {
    p.count_request();
    p.metrics().request(Route::PingPush);
    let bytes = match read_body(&p, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(Json::Object(obj)) = serde_json::from_slice::<Json>(&bytes).ok() else {
        return json_response(StatusCode::BAD_REQUEST, ERR_JSON);
    };
    let info = parse_push_info(&obj);
    if info.token.is_empty() {
        return json_response(StatusCode::BAD_REQUEST, ERR_NO_TOKEN);
    }
    p.ping_push(&info);
    json_response(StatusCode::OK, "{}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_hex_or_sha1() {
        assert_eq!(
            hex::encode(parse_key("testkey")),
            "913a73b565c8e2c8ed94497580f619397709b8b6"
        );
        let h = "913A73B565C8E2C8ED94497580F619397709B8B6trailing";
        assert_eq!(
            hex::encode(parse_key(h)),
            "913a73b565c8e2c8ed94497580f619397709b8b6"
        );
        let zero = "0".repeat(40);
        assert_eq!(
            parse_key(&zero),
            <[u8; 20]>::from(sha1::Sha1::digest(zero.as_bytes()))
        );
    }
}
