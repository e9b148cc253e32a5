//! Push: SUBSCRIBE/UNSUBSCRIBE, gateway bodies field by field, UnifiedPush, shared listens,
//! retries, leases and timeout pushes, permanent puts.

use std::time::Duration;

use serde_json::json;
use waypost_dht_proxy::backend::MemoryBackend;
use waypost_dht_proxy::config::{ProxyOptions, PushFormat};
use waypost_dht_proxy::value::Value;

use crate::common::*;

const H: &str = "e22a000000000000000000000000000000000001";

async fn start_push(format: PushFormat, gw: &Receiver) -> Server {
    let opts = ProxyOptions {
        timers: fast_timers(),
        push_server: Some(format!("http://{}", gw.addr)),
        push_format: format,
        bundle_id: "com.example.app".into(),
        ..ProxyOptions::default()
    };
    start_with(opts, MemoryBackend::new()).await
}

fn sub_body(token: &str, cid: &str, sid: &str, platform: &str, topic: &str) -> Vec<u8> {
    let mut b = json!({"key": token, "client_id": cid, "session_id": sid, "platform": platform, "topic": topic})
        .to_string()
        .into_bytes();
    b.push(b' ');
    b
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn android_2_4_body_and_subscribe_replies() {
    let gw = Receiver::start().await;
    let s = start_push(PushFormat::V2, &gw).await;
    let path = format!("/key/{H}");
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &path,
        Some(&sub_body(
            "ANDROID_DEV_TOKEN",
            "client-1",
            "sess-1",
            "android",
            "",
        )),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{}\n");
    assert_eq!(r.header("content-length"), Some("3"));
    assert!(gw.requests().is_empty(), "no values yet, no push");

    let before = now_ms();
    s.dht
        .inject(key_bytes(H), Value::plain(42, 0, b"z".to_vec(), ""));
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/push");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let n = &req.body["notifications"][0];
    let t = n["data"]["t"].as_u64().unwrap();
    assert!(t >= before && t <= now_ms());
    assert_eq!(
        req.body,
        json!({"notifications":[{"data":{"key":H,"s":"sess-1","t":t,"to":"client-1"},"platform":2,
            "priority":"high","time_to_live":86400,"tokens":["ANDROID_DEV_TOKEN"]}]})
    );

    // Expiry: exp id, normal priority.
    s.dht.expire(&key_bytes(H), 42);
    let got = gw.wait_for(2, Duration::from_secs(5)).await;
    let n = &got[1].body["notifications"][0];
    assert_eq!(n["data"]["exp"], "42");
    assert_eq!(n["priority"], "normal");

    // Existing subscriber: streamed get, or `{}` with refresh (legacy path).
    s.dht
        .inject(key_bytes(H), Value::plain(43, 0, b"y".to_vec(), ""));
    gw.wait_for(3, Duration::from_secs(5)).await;
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &path,
        Some(&sub_body(
            "ANDROID_DEV_TOKEN",
            "client-1",
            "sess-2",
            "android",
            "",
        )),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.chunked);
    assert_eq!(r.lines().len(), 1);
    assert_eq!(r.lines()[0]["id"], "43");
    let mut b: serde_json::Value = serde_json::from_slice(&sub_body(
        "ANDROID_DEV_TOKEN",
        "client-1",
        "sess-3",
        "android",
        "",
    ))
    .unwrap();
    b["refresh"] = json!(true);
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/{H}"),
        Some(b.to_string().as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.chunked);
    assert_eq!(r.chunks, vec![b"{}\n".to_vec()]);
    // The session id was updated by the re-subscribe.
    s.dht
        .inject(key_bytes(H), Value::plain(44, 0, b"w".to_vec(), ""));
    let got = gw.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(got[3].body["notifications"][0]["data"]["s"], "sess-3");

    // UNSUBSCRIBE: 200, empty body; the DHT listen is cancelled.
    assert_eq!(s.dht.listener_count(), 1);
    let r = request(
        s.addr,
        "UNSUBSCRIBE",
        &path,
        Some(br#"{"key":"ANDROID_DEV_TOKEN","client_id":"client-1"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(eventually(Duration::from_secs(5), || s.dht.listener_count() == 0).await);
    // Unknown subscriber: still 200.
    let r = request(
        s.addr,
        "UNSUBSCRIBE",
        &path,
        Some(br#"{"key":"nobody","client_id":"x"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn subscribe_errors() {
    let gw = Receiver::start().await;
    let s = start_push(PushFormat::V2, &gw).await;
    let path = format!("/key/{H}");
    let r = request(s.addr, "SUBSCRIBE", &path, Some(b"{nope")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, r#"{"err:":"Incorrect JSON"}"#)
    );
    let r = request(s.addr, "SUBSCRIBE", &path, Some(br#"{"client_id":"c"}"#)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, r#"{"err":"No token"}"#)
    );
    let r = request(s.addr, "UNSUBSCRIBE", &path, Some(b"{nope")).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn ios_bodies_priorities_and_initial_push() {
    let gw = Receiver::start().await;
    let s = start_push(PushFormat::V2, &gw).await;
    let key = key_bytes(H);
    // A value already stored produces a push right after SUBSCRIBE.
    s.dht.inject(key, Value::plain(1, 0, b"a".to_vec(), ""));
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body("IOS_DEV_TOKEN", "c", "s", "ios", "")),
    )
    .await;
    assert_eq!(r.text(), "{}\n");
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    let n = &got[0].body["notifications"][0];
    let exp = n["expiration"].as_u64().unwrap();
    let now_s = now_ms() / 1000;
    assert!(exp >= now_s + 86_390 && exp <= now_s + 86_410);
    let t = n["data"]["t"].as_u64().unwrap();
    assert_eq!(
        got[0].body,
        json!({"notifications":[{"alert":{"title":"hello"},"data":{"key":H,"s":"s","t":t,"to":"c"},
            "expiration":exp,"mutable_content":true,"platform":1,"priority":"high","push_type":"alert",
            "tokens":["IOS_DEV_TOKEN"],"topic":"com.example.app"}]})
    );
    // Priority 1 ⇒ normal/background.
    s.dht.inject(
        key,
        Value {
            priority: 1,
            ..Value::plain(2, 0, b"b".to_vec(), "")
        },
    );
    let got = gw.wait_for(2, Duration::from_secs(5)).await;
    let n = &got[1].body["notifications"][0];
    assert_eq!(n["priority"], "normal");
    assert_eq!(n["push_type"], "background");
    assert_eq!(n["content_available"], true);
    assert!(n.get("alert").is_none() && n.get("mutable_content").is_none());

    // Unknown platform behaves like iOS, with the subscriber's own topic.
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body("NONE_TOKEN", "dhtnode", "x", "", "my.topic")),
    )
    .await;
    assert_eq!(r.status, 200);
    let got = gw.wait_for(3, Duration::from_secs(5)).await;
    let n = &got[2].body["notifications"][0];
    assert_eq!(n["platform"], 1);
    assert_eq!(n["topic"], "my.topic");
    assert_eq!(n["tokens"], json!(["NONE_TOKEN"]));
    assert_eq!(n["data"]["to"], "dhtnode");
    assert_eq!(
        s.dht.listener_count(),
        1,
        "one DHT listen shared by all subscribers of a key"
    );
}

#[tokio::test]
async fn format_4_bodies() {
    let gw = Receiver::start().await;
    let s = start_push(PushFormat::V4, &gw).await;
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body("T", "c", "s", "android", "")),
    )
    .await;
    assert_eq!(r.status, 200);
    s.dht.inject(
        key_bytes(H),
        Value {
            push_type: "peer".into(),
            ..Value::plain(5, 0, b"a".to_vec(), "")
        },
    );
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    let n = &got[0].body["notifications"][0];
    let t = n["data"]["t"].as_u64().unwrap();
    assert_eq!(
        got[0].body,
        json!({"notifications":[{"android":{"priority":"high","ttl":"86400s"},
            "data":{"ids":"5","key":H,"pt":"peer","s":"s","t":t,"to":"c"},"platform":2,"tokens":["T"]}]})
    );
}

#[tokio::test]
async fn unifiedpush_posts_to_the_endpoint_keeping_its_port() {
    let gw = Receiver::start().await;
    let up = Receiver::start().await;
    let s = start_push(PushFormat::V2, &gw).await;
    let endpoint = format!("http://{}/UP?token=abc", up.addr);
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body(
            &endpoint,
            "client-up",
            "sess-up",
            "unifiedpush",
            "",
        )),
    )
    .await;
    assert_eq!(r.status, 200);
    s.dht
        .inject(key_bytes(H), Value::plain(9, 0, b"u".to_vec(), ""));
    let got = up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/UP?token=abc");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].header("urgency"), Some("high"));
    assert_eq!(got[0].header("ttl"), Some("86400"));
    let t = got[0].body["t"].as_u64().unwrap();
    assert_eq!(
        got[0].body,
        json!({"key":H,"s":"sess-up","t":t,"to":"client-up"})
    );
    assert!(
        gw.requests().is_empty(),
        "UnifiedPush does not go through the gateway"
    );
}

#[tokio::test]
async fn unifiedpush_with_web_push_keys_is_encrypted() {
    use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};
    use base64::Engine as _;
    let gw = Receiver::start().await;
    let up = Receiver::start().await;
    let s = start_push(PushFormat::V4, &gw).await;
    let ua = PrivateKey::generate(&ECDH_P256).unwrap();
    let p256dh = ua.compute_public_key().unwrap().as_ref().to_vec();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let topic = format!("{}|{}", b64.encode(&p256dh), b64.encode([9u8; 16]));
    let endpoint = format!("http://{}/wp/abc", up.addr);
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body(
            &endpoint,
            "client-wp",
            "sess-wp",
            "unifiedpush",
            &topic,
        )),
    )
    .await;
    assert_eq!(r.status, 200);
    s.dht
        .inject(key_bytes(H), Value::plain(9, 0, b"u".to_vec(), ""));
    let got = up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("content-encoding"), Some("aes128gcm"));
    let raw = &got[0].raw;
    assert_eq!(
        u32::from_be_bytes(raw[16..20].try_into().unwrap()),
        4096,
        "record size"
    );
    assert_eq!(raw[20], 65, "key id is the sender's P-256 public key");
    assert!(
        !String::from_utf8_lossy(raw).contains("client-wp"),
        "body is not in clear"
    );
}

#[tokio::test]
async fn delivery_is_retried_after_gateway_errors() {
    let gw = Receiver::start().await;
    gw.statuses.lock().extend([500, 503]);
    let s = start_push(PushFormat::V2, &gw).await;
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body("T", "c", "s", "android", "")),
    )
    .await;
    assert_eq!(r.status, 200);
    s.dht
        .inject(key_bytes(H), Value::plain(9, 0, b"u".to_vec(), ""));
    let got = gw.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3, "two failures then success");
    assert_eq!(got[0].body, got[2].body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.requests().len(), 3, "no retry after success");
}

#[tokio::test]
async fn subscription_lease_timeout_push_and_expiry() {
    let gw = Receiver::start().await;
    let mut opts = ProxyOptions {
        push_server: Some(format!("http://{}", gw.addr)),
        push_format: PushFormat::V2,
        ..ProxyOptions::default()
    };
    opts.timers = fast_timers();
    opts.timers.lease = Duration::from_millis(1500);
    opts.timers.margin = Duration::from_millis(1000);
    let s = start_with(opts, MemoryBackend::new()).await;
    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body("T", "c", "s1", "android", "")),
    )
    .await;
    assert_eq!(r.status, 200);
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let n = &got[0].body["notifications"][0];
    assert_eq!(n["data"], json!({"timeout":H,"to":"c","s":"s1"}));
    assert_eq!(n["priority"], "normal");
    assert!(
        eventually(Duration::from_secs(5), || s.dht.listener_count() == 0).await,
        "lease expiry cancels the listen"
    );
    assert_eq!(s.proxy.counts().3, 0);
}

#[tokio::test]
async fn permanent_puts_dedupe_lease_and_timeout() {
    let gw = Receiver::start().await;
    let mut opts = ProxyOptions {
        push_server: Some(format!("http://{}", gw.addr)),
        push_format: PushFormat::V2,
        ..ProxyOptions::default()
    };
    opts.timers = fast_timers();
    opts.timers.lease = Duration::from_millis(2000);
    opts.timers.margin = Duration::from_millis(1000);
    let s = start_with(opts, MemoryBackend::new()).await;
    let key = key_bytes(H);
    let body = br#"{"data":"cGVybUM=","id":"0","type":0,"permanent":{"client_id":"dhtnode","key":"DEVKEY-C","platform":"android","session_id":"w0H#O!y3","topic":""}}"#;
    let r = request(s.addr, "POST", &format!("/key/{H}"), Some(body)).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.text().contains("permanent"),
        "the answer never contains permanent"
    );
    let id = r.lines()[0]["id"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(s.dht.is_permanent(&key, id));
    let puts = s.dht.put_count();
    // Same content and token, id 0 ⇒ the same id, no new DHT put.
    let r = request(s.addr, "POST", &format!("/key/{H}"), Some(body)).await;
    assert_eq!(r.lines()[0]["id"].as_str().unwrap(), id.to_string());
    assert_eq!(s.dht.put_count(), puts);
    // Re-POST with the known id: a new DHT put (the old refresh is replaced), same id.
    let again = String::from_utf8_lossy(body).replace(r#""id":"0""#, &format!(r#""id":"{id}""#));
    let r = request(s.addr, "POST", &format!("/key/{H}"), Some(again.as_bytes())).await;
    assert_eq!(r.lines()[0]["id"].as_str().unwrap(), id.to_string());
    assert_eq!(s.dht.put_count(), puts + 1);
    assert!(s.dht.is_permanent(&key, id));
    // permanent:true without token, and a plain put: not deduplicated with it.
    let r = request(
        s.addr,
        "POST",
        &format!("/key/{H}"),
        Some(br#"{"data":"cGVybUM=","permanent":true}"#),
    )
    .await;
    assert_ne!(r.lines()[0]["id"].as_str().unwrap(), id.to_string());
    let stats = request(s.addr, "GET", "/node/stats", None).await;
    let j: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(
        (j["putCount"].as_u64(), j["totalPermanentPuts"].as_u64()),
        (Some(1), Some(2))
    );

    // At lease − margin: the timeout push with vid.
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    let n = &got[0].body["notifications"][0];
    assert_eq!(
        n["data"],
        json!({"timeout":H,"to":"dhtnode","s":"w0H#O!y3","vid":id.to_string()})
    );
    assert_eq!(n["tokens"], json!(["DEVKEY-C"]));
    // At lease end the put is cancelled.
    assert!(eventually(Duration::from_secs(5), || !s.dht.is_permanent(&key, id)).await);
    // The token-less permanent put was posted a moment later: its lease ends a moment later.
    assert!(
        eventually(Duration::from_secs(5), || s.proxy.counts().1 == 0).await,
        "every permanent put is dropped at the end of its lease"
    );
}

#[tokio::test]
async fn subscription_limits() {
    let gw = Receiver::start().await;
    let mut opts = ProxyOptions {
        push_server: Some(format!("http://{}", gw.addr)),
        ..ProxyOptions::default()
    };
    opts.timers = fast_timers();
    opts.limits.subscriptions_per_ip = 2;
    let s = start_with(opts, MemoryBackend::new()).await;
    for i in 0..2 {
        let r = request(
            s.addr,
            "SUBSCRIBE",
            &format!("/key/k{i}"),
            Some(&sub_body("T", "c", "s", "android", "")),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = request(
        s.addr,
        "SUBSCRIBE",
        "/key/k9",
        Some(&sub_body("T", "c", "s", "android", "")),
    )
    .await;
    assert_eq!(r.status, 429);
    // Renewing an existing one is always allowed.
    let r = request(
        s.addr,
        "SUBSCRIBE",
        "/key/k0",
        Some(&sub_body("T", "c", "s", "android", "")),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(
        s.addr,
        "UNSUBSCRIBE",
        "/key/k0",
        Some(br#"{"key":"T","client_id":"c"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(
        s.addr,
        "SUBSCRIBE",
        "/key/k9",
        Some(&sub_body("T", "c", "s", "android", "")),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn subscriptions_and_permanent_puts_survive_a_restart() {
    let gw = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = ProxyOptions {
        push_server: Some(format!("http://{}", gw.addr)),
        push_format: PushFormat::V2,
        data_dir: Some(dir.path().to_owned()),
        timers: fast_timers(),
        ..ProxyOptions::default()
    };
    let id;
    {
        let s = start_with(opts.clone(), MemoryBackend::new()).await;
        let r = request(
            s.addr,
            "SUBSCRIBE",
            &format!("/key/{H}"),
            Some(&sub_body("T", "c", "s", "android", "")),
        )
        .await;
        assert_eq!(r.status, 200);
        let r = request(
            s.addr,
            "POST",
            "/key/perm",
            Some(br#"{"data":"cA==","permanent":true}"#),
        )
        .await;
        assert_eq!(r.status, 200);
        id = r.lines()[0]["id"].as_str().unwrap().parse::<u64>().unwrap();
    }
    // A fresh DHT and proxy on the same data directory.
    let mut reopened = false;
    for _ in 0..100 {
        if waypost_dht_proxy::store::Store::open(dir.path()).is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened, "the first proxy released its database");
    let s = start_with(opts, MemoryBackend::new()).await;
    let perm_key = waypost_dht_proxy::http::parse_key("perm");
    assert!(
        eventually(Duration::from_secs(5), || s.dht.is_permanent(&perm_key, id)).await,
        "permanent put re-issued"
    );
    assert_eq!(s.proxy.counts().3, 1, "subscription restored");
    s.dht.inject(
        key_bytes(H),
        Value::plain(3, 0, b"after restart".to_vec(), ""),
    );
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "restored subscription still pushes");
    assert_eq!(got[0].body["notifications"][0]["data"]["to"], "c");
}

/// `/node/pingPush` (OpenDHT 2.5+): a high-priority push `{"to":client_id,"pong":true}` to the
/// given token, the server's bundle id when no topic is given; no DHT operation, no listen.
#[tokio::test]
async fn ping_push_sends_a_high_priority_pong() {
    let gw = Receiver::start().await;
    let s = start_push(PushFormat::V2, &gw).await;
    let body = br#"{"key":"PING_TOKEN","platform":"ios","topic":"","client_id":"acc-1"}"#;
    let r = request(s.addr, "POST", "/node/pingPush", Some(body)).await;
    assert_eq!(r.status, 200);
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "pingPush reached the gateway");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/api/push");
    let n = &got[0].body["notifications"][0];
    assert_eq!(n["tokens"], json!(["PING_TOKEN"]));
    assert_eq!(n["platform"], 1);
    assert_eq!(n["topic"], "com.example.app");
    assert_eq!(n["priority"], "high");
    assert_eq!(n["data"], json!({"to":"acc-1","pong":true}));

    let body = br#"{"key":"ANDROID_PING","platform":"android","client_id":"acc-2"}"#;
    let r = request(s.addr, "POST", "/node/pingPush", Some(body)).await;
    assert_eq!(r.status, 200);
    let got = gw.wait_for(2, Duration::from_secs(5)).await;
    let n = &got[1].body["notifications"][0];
    assert_eq!(n["tokens"], json!(["ANDROID_PING"]));
    assert_eq!(n["platform"], 2);
    assert_eq!(n["priority"], "high");
    assert_eq!(n["data"], json!({"to":"acc-2","pong":true}));

    // Errors as for SUBSCRIBE; nothing is pushed.
    let r = request(s.addr, "POST", "/node/pingPush", Some(b"{nope")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "{\"err:\":\"Incorrect JSON\"}")
    );
    let r = request(
        s.addr,
        "POST",
        "/node/pingPush",
        Some(br#"{"client_id":"x"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "{\"err\":\"No token\"}")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.requests().len(), 2);
    assert_eq!(s.dht.listener_count(), 0);
}

/// Push subscribers and HTTP listen streams of one key share one DHT listen; it ends with the
/// last of them, whichever kind it is.
#[tokio::test]
async fn push_subscribers_and_listen_streams_share_one_dht_listen() {
    let gw = Receiver::start().await;
    let s = start_push(PushFormat::V2, &gw).await;
    let key = key_bytes(H);
    s.dht.inject(key, Value::plain(1, 0, b"a".to_vec(), ""));

    let mut stream = send_raw(s.addr, "GET", &format!("/key/{H}/listen"), None, "").await;
    assert_eq!(read_head(&mut stream).await.unwrap().0, 200);
    let first = read_chunk(&mut stream).await.unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"id\":\"1\""));

    let r = request(
        s.addr,
        "SUBSCRIBE",
        &format!("/key/{H}"),
        Some(&sub_body("TOK", "c", "s", "android", "")),
    )
    .await;
    assert_eq!(r.text(), "{}\n");
    // The subscriber's first push carries the key's current values, as its own listen's first
    // callback would have.
    let got = gw.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["notifications"][0]["data"]["key"], H);
    assert_eq!(s.dht.listener_count(), 1, "one DHT listen for both kinds");
    assert_eq!(s.proxy.feed_count(), 1);

    // A change reaches both.
    s.dht.inject(key, Value::plain(2, 0, b"b".to_vec(), ""));
    let c = read_chunk(&mut stream).await.unwrap();
    assert!(String::from_utf8_lossy(&c).contains("\"id\":\"2\""));
    assert_eq!(gw.wait_for(2, Duration::from_secs(5)).await.len(), 2);
    s.dht.expire(&key, 1);
    let c = read_chunk(&mut stream).await.unwrap();
    assert!(String::from_utf8_lossy(&c).contains("\"expired\":true,\"id\":\"1\""));
    let got = gw.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(got[2].body["notifications"][0]["data"]["exp"], "1");

    // The stream goes: the subscriber still needs the listen.
    drop(stream);
    assert!(eventually(Duration::from_secs(5), || s.proxy.listen_count() == 0).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.dht.listener_count(), 1);
    s.dht.inject(key, Value::plain(3, 0, b"c".to_vec(), ""));
    assert_eq!(gw.wait_for(4, Duration::from_secs(5)).await.len(), 4);

    // A new stream joins the running listen and starts from the current values.
    let mut stream = send_raw(s.addr, "GET", &format!("/key/{H}/listen"), None, "").await;
    read_head(&mut stream).await.unwrap();
    let mut seen = String::new();
    while !(seen.contains("\"id\":\"2\"") && seen.contains("\"id\":\"3\"")) {
        seen.push_str(&String::from_utf8_lossy(
            &read_chunk(&mut stream).await.unwrap(),
        ));
    }
    assert!(!seen.contains("\"id\":\"1\""));
    assert_eq!(s.dht.listener_count(), 1);

    // The subscriber goes: the stream keeps it; then the stream goes: the listen ends.
    let r = request(
        s.addr,
        "UNSUBSCRIBE",
        &format!("/key/{H}"),
        Some(br#"{"key":"TOK","client_id":"c"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.dht.listener_count(), 1);
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || s.dht.listener_count() == 0
            && s.proxy.feed_count() == 0)
        .await
    );
}
