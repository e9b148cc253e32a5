//! The HTTP API (spec nameserver.md §1.3–§1.6): routing, validation, verification, responses.
//!
//! Nothing here logs a request: there are no access logs. Only counters by typed outcome.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use waypost_protocol::identity::{JamiId, PublicKey};
use waypost_protocol::names;

use crate::config::Settings;
use crate::metrics::{Metrics, Op, Outcome};
use crate::ratelimit::RateLimiter;
use crate::store::{Claim, NameStore, Record, StoreError};

/// Shared state of the API.
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn NameStore>,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Option<RateLimiter>,
    pub(crate) settings: Settings,
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: &Value) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn post_error(status: StatusCode, error: &str) -> Resp {
    json_response(status, &json!({"success": false, "error": error}))
}

fn get_error(status: StatusCode, error: &str) -> Resp {
    json_response(status, &json!({"error": error}))
}

fn store_status(e: StoreError) -> StatusCode {
    match e {
        StoreError::Unavailable | StoreError::Open => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn log_store_error(e: StoreError) {
    tracing::error!(error.kind = %e, "name store failure");
}

/// Runs a blocking store call off the async workers, bounded by the backend deadline.
///
/// The deadline is three quarters of the request timeout, so a slow or stuck store answers 503
/// before the request-level timeout would answer 408: Jami clients read any 4xx on a lookup as
/// "name not registered", and a name must never look free because the store was slow.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let deadline = state.settings.request_timeout.mul_f32(0.75);
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(f)).await {
        Ok(joined) => joined.unwrap_or(Err(StoreError::Unavailable)),
        Err(_) => Err(StoreError::Unavailable),
    }
}

enum Route<'a> {
    Name(&'a str),
    NameField(&'a str, Field),
    Addr(&'a str),
}

#[derive(Clone, Copy)]
enum Field {
    PublicKey,
    Signature,
}

fn route<'a>(prefix: &str, path: &'a str) -> Option<Route<'a>> {
    let rest = if prefix.is_empty() {
        path
    } else {
        let head = path.get(..prefix.len())?;
        if !head.eq_ignore_ascii_case(prefix) {
            return None;
        }
        &path[prefix.len()..]
    };
    let rest = rest.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let kind = parts.next()?;
    let arg = parts.next()?;
    let tail = parts.next();
    match (kind, tail) {
        ("name", None) => Some(Route::Name(arg)),
        ("name", Some("publickey")) => Some(Route::NameField(arg, Field::PublicKey)),
        ("name", Some("signature")) => Some(Route::NameField(arg, Field::Signature)),
        ("addr", None) => Some(Route::Addr(arg)),
        _ => None,
    }
}

fn decode_segment(seg: &str) -> Option<String> {
    String::from_utf8(names::percent_decode(seg)?).ok()
}

fn method_not_allowed(metrics: &Metrics, allow: &'static str) -> Resp {
    metrics.count(Op::Other, Outcome::NoRoute);
    let mut r = get_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Handles one request.
pub(crate) async fn handle(state: Arc<AppState>, req: Request<Incoming>, peer: IpAddr) -> Resp {
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    let is_post = *req.method() == Method::POST;
    let path = req.uri().path().to_owned();
    let Some(route) = route(&state.settings.path_prefix, &path) else {
        state.metrics.count(Op::Other, Outcome::NoRoute);
        return get_error(StatusCode::NOT_FOUND, "not found");
    };
    match route {
        Route::Name(seg) if is_get => lookup(&state, seg, None).await,
        Route::NameField(seg, f) if is_get => lookup(&state, seg, Some(f)).await,
        Route::Name(seg) if is_post => {
            let seg = seg.to_owned();
            register(&state, &seg, req, peer).await
        }
        Route::Name(_) => method_not_allowed(&state.metrics, "GET, HEAD, POST"),
        Route::Addr(seg) if is_get => reverse(&state, seg).await,
        Route::Addr(_) | Route::NameField(..) => method_not_allowed(&state.metrics, "GET, HEAD"),
    }
}

async fn lookup(state: &AppState, seg: &str, field: Option<Field>) -> Resp {
    let m = &state.metrics;
    let policy = state.settings.name_policy;
    let Some(name) = decode_segment(seg).and_then(|n| policy.lookup_key(&n).ok()) else {
        m.count(Op::Lookup, Outcome::Invalid);
        return get_error(StatusCode::BAD_REQUEST, "invalid name");
    };
    let store = state.store.clone();
    let rec = match blocking(state, move || store.get_by_name(&name)).await {
        Ok(Some(rec)) => rec,
        Ok(None) => {
            m.count(Op::Lookup, Outcome::NotFound);
            return get_error(StatusCode::NOT_FOUND, "name not registered");
        }
        Err(e) => {
            log_store_error(e);
            m.count(Op::Lookup, Outcome::StoreError);
            return get_error(store_status(e), "server error");
        }
    };
    m.count(Op::Lookup, Outcome::Found);
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(rec.name));
    match field {
        None => {
            obj.insert(
                "addr".into(),
                Value::String(names::format_address(&JamiId::new(rec.addr))),
            );
            if !rec.publickey.is_empty() && !rec.signature.is_empty() {
                obj.insert("publickey".into(), Value::String(rec.publickey));
                obj.insert("signature".into(), Value::String(rec.signature));
            }
        }
        Some(Field::PublicKey) => {
            obj.insert("publickey".into(), Value::String(rec.publickey));
        }
        Some(Field::Signature) => {
            obj.insert("signature".into(), Value::String(rec.signature));
        }
    }
    json_response(StatusCode::OK, &Value::Object(obj))
}

async fn reverse(state: &AppState, seg: &str) -> Resp {
    let m = &state.metrics;
    let Ok(addr) = names::parse_address(seg) else {
        m.count(Op::Reverse, Outcome::Invalid);
        return get_error(StatusCode::BAD_REQUEST, "invalid address");
    };
    let store = state.store.clone();
    match blocking(state, move || store.get_by_addr(&addr)).await {
        Ok(Some(name)) => {
            m.count(Op::Reverse, Outcome::Found);
            json_response(StatusCode::OK, &json!({"name": name}))
        }
        Ok(None) => {
            m.count(Op::Reverse, Outcome::NotFound);
            get_error(StatusCode::NOT_FOUND, "address not registered")
        }
        Err(e) => {
            log_store_error(e);
            m.count(Op::Reverse, Outcome::StoreError);
            get_error(store_status(e), "server error")
        }
    }
}

/// Reads the body under the cap; `Err` is the response to send.
async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, Resp> {
    let limit = state.settings.body_limit;
    let too_large = || {
        state.metrics.count(Op::Register, Outcome::TooLarge);
        post_error(StatusCode::PAYLOAD_TOO_LARGE, "request too large")
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => {
            state.metrics.count(Op::Register, Outcome::BadRequest);
            Err(post_error(StatusCode::BAD_REQUEST, "invalid request"))
        }
    }
}

/// A non-empty string field, or `None` if absent, empty or not a string.
fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

async fn register(state: &AppState, seg: &str, req: Request<Incoming>, peer: IpAddr) -> Resp {
    let m = &state.metrics;
    if let Some(limiter) = &state.limiter
        && !limiter.check(peer, Instant::now())
    {
        m.count(Op::Register, Outcome::RateLimited);
        let mut r = post_error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let body = match read_body(state, req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    // 1. The body must be a JSON object.
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
        m.count(Op::Register, Outcome::BadRequest);
        return post_error(StatusCode::BAD_REQUEST, "invalid request");
    };
    // 2. addr, 3. owner.
    let Some(addr) = str_field(&obj, "addr").and_then(|a| names::parse_address(a).ok()) else {
        m.count(Op::Register, Outcome::BadRequest);
        return post_error(StatusCode::BAD_REQUEST, "invalid address");
    };
    let Some(owner) = str_field(&obj, "owner").and_then(|o| names::parse_address(o).ok()) else {
        m.count(Op::Register, Outcome::BadRequest);
        return post_error(StatusCode::BAD_REQUEST, "no owner");
    };
    // 4. The name exactly as received (percent-decoded, no case folding).
    let policy = state.settings.name_policy;
    let Some(name) = decode_segment(seg).filter(|n| policy.check_registration(n).is_ok()) else {
        m.count(Op::Register, Outcome::Invalid);
        return post_error(StatusCode::BAD_REQUEST, "invalid name");
    };
    // 5.–8. Key and signature.
    let pk_field = str_field(&obj, "publickey");
    let sig_field = str_field(&obj, "signature");
    let (publickey, signature) = match (pk_field, sig_field) {
        (None, None) if state.settings.allow_legacy => (String::new(), String::new()),
        (None, _) => {
            m.count(Op::Register, Outcome::BadRequest);
            return post_error(StatusCode::BAD_REQUEST, "publickey not found or invalid");
        }
        (Some(_), None) => {
            m.count(Op::Register, Outcome::BadRequest);
            return post_error(StatusCode::BAD_REQUEST, "signature not found or invalid");
        }
        (Some(pk), Some(sig)) => {
            let Ok(key) = PublicKey::from_base64_field(pk) else {
                m.count(Op::Register, Outcome::BadKey);
                return post_error(StatusCode::BAD_REQUEST, "publickey not found or invalid");
            };
            if key.id() != addr {
                m.count(Op::Register, Outcome::KeyMismatch);
                return post_error(StatusCode::UNAUTHORIZED, "publickey does not match addr");
            }
            match key.verify_base64(name.as_bytes(), sig) {
                Ok(()) => {}
                Err(waypost_protocol::identity::IdentityError::Base64) => {
                    m.count(Op::Register, Outcome::BadRequest);
                    return post_error(StatusCode::BAD_REQUEST, "signature not found or invalid");
                }
                Err(_) => {
                    m.count(Op::Register, Outcome::BadSignature);
                    return post_error(StatusCode::UNAUTHORIZED, "signature verification failed");
                }
            }
            (pk.to_owned(), sig.to_owned())
        }
    };
    // 9.–13. Claim atomically; acknowledged only once durable.
    let record = Record {
        name,
        addr: *addr.as_bytes(),
        owner: *owner.as_bytes(),
        publickey,
        signature,
    };
    let store = state.store.clone();
    match blocking(state, move || store.claim(&record)).await {
        Ok(Claim::Inserted) => {
            m.count(Op::Register, Outcome::Registered);
            json_response(StatusCode::OK, &json!({"success": true}))
        }
        Ok(Claim::AlreadyYours) => {
            m.count(Op::Register, Outcome::Idempotent);
            json_response(StatusCode::OK, &json!({"success": true}))
        }
        Ok(Claim::NameTaken) => {
            m.count(Op::Register, Outcome::NameTaken);
            post_error(StatusCode::CONFLICT, "name already taken")
        }
        Ok(Claim::AddrHasName(existing)) => {
            m.count(Op::Register, Outcome::AddrHasName);
            json_response(
                StatusCode::FORBIDDEN,
                &json!({"success": false, "name": existing, "addr": names::format_address(&addr)}),
            )
        }
        Err(e) => {
            log_store_error(e);
            m.count(Op::Register, Outcome::StoreError);
            post_error(store_status(e), "server error")
        }
    }
}

/// The response for a request that ran past the request timeout.
pub(crate) fn timeout_response(metrics: &Metrics) -> Resp {
    metrics.count(Op::Other, Outcome::Timeout);
    get_error(StatusCode::REQUEST_TIMEOUT, "request timeout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_with_and_without_prefix() {
        assert!(matches!(
            route("", "/name/alice"),
            Some(Route::Name("alice"))
        ));
        assert!(matches!(route("", "/addr/0x1"), Some(Route::Addr("0x1"))));
        assert!(matches!(
            route("", "/name/a/publickey"),
            Some(Route::NameField("a", Field::PublicKey))
        ));
        assert!(matches!(
            route("", "/name/a/signature"),
            Some(Route::NameField("a", Field::Signature))
        ));
        assert!(matches!(route("", "/name/"), Some(Route::Name(""))));
        assert!(route("", "/nonexistent").is_none());
        assert!(route("", "/name/a/owner").is_none());
        assert!(route("", "/name").is_none());
        assert!(matches!(
            route("/ns", "/NS/name/bob"),
            Some(Route::Name("bob"))
        ));
        assert!(route("/ns", "/name/bob").is_none());
        assert!(route("/ns", "/nsx/name/bob").is_none());
    }
}
