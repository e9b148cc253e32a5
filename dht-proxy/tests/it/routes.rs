//! curl-level tests of every route: status codes, headers, exact bodies, streaming format.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use waypost_dht_proxy::backend::MemoryBackend;
use waypost_dht_proxy::config::ProxyOptions;
use waypost_dht_proxy::value::{Body, Value};

use crate::common::*;

fn assert_json_headers(r: &Resp) {
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r:?}");
}

#[tokio::test]
async fn node_info_and_stats() {
    let s = start().await;
    for path in ["/", "/node/info"] {
        let r = request(s.addr, "GET", path, None).await;
        assert_eq!(r.status, 200);
        assert_json_headers(&r);
        assert!(
            r.header("content-length").is_some(),
            "node info has a Content-Length"
        );
        assert!(r.text().ends_with("}\n"));
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["node_id"], hex::encode([0x70u8; 20]));
        assert_eq!(j["ipv4"], json!({"dubious":0,"good":1,"incoming":0}));
        assert_eq!(j["ipv6"]["good"], 0);
        assert_eq!(j["public_ip"], "127.0.0.1");
        assert!(j["ops"].is_u64());
    }
    let r = request(s.addr, "GET", "/node/stats", None).await;
    assert_eq!(r.status, 200);
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    for k in [
        "listenCount",
        "putCount",
        "totalPermanentPuts",
        "pushListenersCount",
    ] {
        assert_eq!(j[k], 0, "{k} in {j}");
    }
    assert!(j["requestRate"].is_number());
    assert!(j["nodeInfo"]["node_id"].is_string());
    assert!(j["nodeInfo"].get("public_ip").is_none());
}

#[tokio::test]
async fn put_then_get_on_all_paths() {
    let s = start().await;
    let body = br#"{"data":"aGVsbG8gd29ybGQ=","type":0,"utype":"text/plain"}"#;
    let r = request(s.addr, "POST", &format!("/key/{KEY}"), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_json_headers(&r);
    assert!(!r.chunked, "put answers with a Content-Length");
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = j["id"].as_str().expect("id is a decimal string").to_owned();
    assert_ne!(id, "0");
    assert_eq!(
        r.text(),
        format!(
            "{{\"data\":\"aGVsbG8gd29ybGQ=\",\"id\":\"{id}\",\"type\":0,\"utype\":\"text/plain\"}}\n"
        )
    );
    assert_eq!(s.dht.values(&key_bytes(KEY)).len(), 1, "stored on the DHT");

    // Legacy path and the SHA-1 of "testkey" name the same key.
    let r = request(
        s.addr,
        "POST",
        &format!("/{KEY}"),
        Some(br#"{"data":"Yg==","id":"77"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.lines()[0]["id"], "77");
    let r = request(
        s.addr,
        "POST",
        "/key/testkey",
        Some(br#"{"data":"Yw==","id":78}"#),
    )
    .await;
    assert_eq!(r.status, 200);

    for path in [
        format!("/key/{KEY}"),
        format!("/{KEY}"),
        "/key/testkey".to_owned(),
    ] {
        let r = request(s.addr, "GET", &path, None).await;
        assert_eq!(r.status, 200);
        assert!(r.chunked, "get is chunked");
        assert_json_headers(&r);
        let lines = r.lines();
        assert_eq!(lines.len(), 3, "{}", r.text());
        assert!(r.text().ends_with('\n'));
        let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&id.as_str()) && ids.contains(&"77") && ids.contains(&"78"));
    }
    // Query strings are ignored.
    let r = request(s.addr, "GET", &format!("/key/{KEY}?foo=bar"), None).await;
    assert_eq!(r.lines().len(), 3);
    // Unknown key: 200 with an empty chunked body.
    let r = request(s.addr, "GET", "/key/nothing-here", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn put_errors_have_exact_bodies() {
    let s = start().await;
    let path = format!("/key/{KEY}");
    let r = request(s.addr, "POST", &path, Some(b"")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, r#"{"err":"Missing parameters"}"#)
    );
    assert_json_headers(&r);
    let r = request(s.addr, "POST", &path, Some(b"{bad")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, r#"{"err:":"Incorrect JSON"}"#)
    );
    let r = request(s.addr, "POST", &path, Some(br#"{"data":"!!notbase64"}"#)).await;
    assert_eq!(r.status, 400);
    let r = request(s.addr, "POST", &path, Some(br#"{"type":123456}"#)).await;
    assert_eq!(r.status, 400);
    // {} is a valid empty value.
    let r = request(s.addr, "POST", &path, Some(b"{}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.lines()[0]["data"], "");
    assert_eq!(r.lines()[0]["type"], 0);
    // Too large a value: Put failed, like the reference (which never gets a remote ack).
    let big = format!("{{\"data\":\"{}\"}}", base64_of(&vec![7u8; 70_000]));
    let r = request(s.addr, "POST", &path, Some(big.as_bytes())).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (502, r#"{"err":"Put failed"}"#)
    );
    // Too large a body.
    let huge = vec![b' '; 300 * 1024];
    let r = request(s.addr, "POST", &path, Some(&huge)).await;
    assert_eq!(r.status, 413);
    // DHT put failure.
    s.dht.set_fail_puts(true);
    let r = request(s.addr, "POST", &path, Some(br#"{"data":"eA=="}"#)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (502, r#"{"err":"Put failed"}"#)
    );
    // Still serving.
    assert_eq!(request(s.addr, "GET", "/", None).await.status, 200);
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn signed_values_are_verified_and_encrypted_pass() {
    let s = start().await;
    let key = key_bytes(KEY);
    let good = signed_value(11, b"hello-signed");
    let mut bad = signed_value(12, b"hello-signed");
    if let Body::Plain { data, .. } = &mut bad.body {
        data[0] ^= 1;
    }
    let enc = Value {
        id: 13,
        body: Body::Encrypted {
            cypher: vec![5; 700],
        },
        priority: 0,
        push_type: String::new(),
    };
    s.dht.inject(key, good.clone());
    s.dht.inject(key, bad.clone());
    s.dht.inject(key, enc);
    let r = request(s.addr, "GET", &format!("/key/{KEY}"), None).await;
    let ids: Vec<String> = r
        .lines()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        vec!["11", "13"],
        "tampered value dropped, encrypted kept"
    );
    let line = &r.lines()[0];
    assert!(
        line["owner"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    assert_eq!(
        r.lines()[1],
        json!({"cypher": base64_of(&[5; 700]), "id": "13"})
    );

    // Through POST: the good one is accepted, the tampered one refused and not stored.
    let other = "/key/signed-post";
    let r = request(
        s.addr,
        "POST",
        other,
        Some(signed_value(0, b"x").to_json_string(false).as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        s.addr,
        "POST",
        other,
        Some(bad.to_json_string(false).as_bytes()),
    )
    .await;
    assert_eq!(r.status, 502);
    let r = request(s.addr, "GET", other, None).await;
    assert_eq!(r.lines().len(), 1);
}

async fn next(r: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(5), read_chunk(r))
        .await
        .expect("chunk in time")
        .expect("chunk")
}

#[tokio::test]
async fn listen_stream_lines_and_cancel() {
    let s = start().await;
    let key = key_bytes(KEY);
    s.dht
        .inject(key, Value::plain(1, 0, b"hello".to_vec(), "text/plain"));
    s.dht.inject(key, Value::plain(2, 0, b"two".to_vec(), ""));
    let mut r = send_raw(
        s.addr,
        "GET",
        &format!("/key/{KEY}/listen"),
        None,
        "Connection: keep-alive\r\n",
    )
    .await;
    let (status, headers) = read_head(&mut r).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked")
    );
    let c1 = next(&mut r).await;
    let c2 = next(&mut r).await;
    for c in [&c1, &c2] {
        assert!(c.ends_with(b"\n"));
        assert_eq!(
            c.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one value per chunk"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&c1),
        "{\"data\":\"aGVsbG8=\",\"id\":\"1\",\"type\":0,\"utype\":\"text/plain\"}\n"
    );
    // A new value arrives.
    s.dht.inject(key, Value::plain(3, 0, b"new".to_vec(), ""));
    let c3 = next(&mut r).await;
    assert_eq!(
        String::from_utf8_lossy(&c3),
        "{\"data\":\"bmV3\",\"id\":\"3\",\"type\":0}\n"
    );
    // An edit is sent; a refresh of the same content is not.
    s.dht
        .inject(key, Value::plain(3, 0, b"edited".to_vec(), ""));
    let c4 = next(&mut r).await;
    assert!(String::from_utf8_lossy(&c4).contains("ZWRpdGVk"));
    // Expiry.
    s.dht.expire(&key, 2);
    let c5 = next(&mut r).await;
    assert_eq!(
        String::from_utf8_lossy(&c5),
        "{\"data\":\"dHdv\",\"expired\":true,\"id\":\"2\",\"type\":0}\n"
    );
    // Signed values failing verification never reach the stream.
    let mut bad = signed_value(9, b"x");
    if let Body::Plain { data, .. } = &mut bad.body {
        data[0] ^= 1;
    }
    s.dht.inject(key, bad);
    s.dht.inject(key, Value::plain(4, 0, b"after".to_vec(), ""));
    let c6 = next(&mut r).await;
    assert!(
        String::from_utf8_lossy(&c6).contains("\"id\":\"4\""),
        "tampered value skipped"
    );

    assert_eq!(s.proxy.listen_count(), 1);
    assert_eq!(s.dht.listener_count(), 1);
    let r2 = request(s.addr, "GET", "/node/stats", None).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r2.body).unwrap()["listenCount"],
        1
    );
    drop(r);
    assert!(
        eventually(Duration::from_secs(5), || s.dht.listener_count() == 0
            && s.proxy.listen_count() == 0)
        .await,
        "closing the socket cancels the DHT listen"
    );
}

#[tokio::test]
async fn listen_streams_on_one_key_share_one_dht_listen() {
    let s = start().await;
    let key = key_bytes(KEY);
    s.dht.inject(key, Value::plain(1, 0, b"one".to_vec(), ""));
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut r = send_raw(s.addr, "GET", &format!("/key/{KEY}/listen"), None, "").await;
        assert_eq!(read_head(&mut r).await.unwrap().0, 200);
        assert!(
            String::from_utf8_lossy(&next(&mut r).await).contains("\"id\":\"1\""),
            "current value first"
        );
        streams.push(r);
    }
    assert_eq!(
        s.dht.listener_count(),
        1,
        "one DHT listen for three streams"
    );
    assert_eq!(s.proxy.feed_count(), 1);
    s.dht.inject(key, Value::plain(2, 0, b"two".to_vec(), ""));
    for r in &mut streams {
        assert!(String::from_utf8_lossy(&next(r).await).contains("\"id\":\"2\""));
    }
    s.dht.expire(&key, 1);
    for r in &mut streams {
        assert!(String::from_utf8_lossy(&next(r).await).contains("\"expired\":true,\"id\":\"1\""));
    }
    // A late joiner gets only what is current.
    let mut late = send_raw(s.addr, "GET", &format!("/key/{KEY}/listen"), None, "").await;
    read_head(&mut late).await.unwrap();
    assert!(String::from_utf8_lossy(&next(&mut late).await).contains("\"id\":\"2\""));
    drop(streams.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.dht.listener_count(),
        1,
        "still needed by the other streams"
    );
    drop(streams);
    drop(late);
    assert!(
        eventually(Duration::from_secs(5), || s.dht.listener_count() == 0
            && s.proxy.feed_count() == 0)
        .await
    );
}

#[tokio::test]
async fn options_cors_and_not_implemented() {
    let s = start().await;
    for path in [
        format!("/{KEY}"),
        format!("/key/{KEY}/listen"),
        format!("/key/{KEY}/options"),
    ] {
        let method = if path.ends_with("/options") {
            "GET"
        } else {
            "OPTIONS"
        };
        let r = request(s.addr, method, &path, None).await;
        assert_eq!(r.status, 200, "{method} {path}");
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("OPTIONS, GET, POST, LISTEN")
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("content-type")
        );
        assert_eq!(r.header("access-control-max-age"), Some("86400"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
    let cases: &[(&str, String, Option<&[u8]>)] = &[
        ("OPTIONS", format!("/key/{KEY}"), None),
        ("DELETE", format!("/key/{KEY}"), None),
        ("GET", "/nope/x".to_owned(), None),
        ("PUT", format!("/{KEY}"), None),
        ("POST", "/node/stats".to_owned(), Some(b"{}")),
        (
            "UNSUBSCRIBE",
            format!("/key/{KEY}"),
            Some(br#"{"client_id":"c"}"#),
        ),
        ("GET", "/a/b/c/d".to_owned(), None),
    ];
    for (m, p, b) in cases {
        let r = request(s.addr, m, p, *b).await;
        assert_eq!(r.status, 501, "{m} {p}");
        assert_eq!(r.header("connection"), Some("close"), "{m} {p}");
        assert!(r.body.is_empty());
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "501 has no CORS headers"
        );
    }
}

#[tokio::test]
async fn keep_alive_and_garbage_leave_the_server_serving() {
    let s = start().await;
    // Two requests on one connection.
    let mut r = send_raw(s.addr, "GET", "/node/info", None, "").await;
    let (st, h) = read_head(&mut r).await.unwrap();
    assert_eq!(st, 200);
    let n: usize = h
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut b = vec![0u8; n];
    tokio::io::AsyncReadExt::read_exact(&mut r, &mut b)
        .await
        .unwrap();
    r.get_mut()
        .write_all(b"GET /node/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (st, _) = read_head(&mut r).await.unwrap();
    assert_eq!(st, 200);

    // Garbage on the wire.
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /key/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ] {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let _ = c.write_all(junk).await;
        let _ = c.shutdown().await;
    }
    // Half-open listen streams: a thousand opened and abandoned.
    let mut socks = Vec::new();
    for i in 0..1000 {
        socks.push(send_raw(s.addr, "GET", &format!("/key/k{i}/listen"), None, "").await);
    }
    assert!(eventually(Duration::from_secs(10), || s.proxy.listen_count() == 1000).await);
    for path in ["/", "/node/stats"] {
        assert_eq!(request(s.addr, "GET", path, None).await.status, 200);
    }
    drop(socks);
    assert!(
        eventually(Duration::from_secs(10), || s.proxy.listen_count() == 0
            && s.dht.listener_count() == 0)
        .await
    );
    let r = request(s.addr, "POST", "/key/x", Some(br#"{"data":"eA=="}"#)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn stream_limits_per_ip_and_global() {
    let mut opts = ProxyOptions {
        timers: fast_timers(),
        ..ProxyOptions::default()
    };
    opts.limits.streams_per_ip = 3;
    opts.limits.streams = 1000;
    let s = start_with(opts.clone(), MemoryBackend::new()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut r = send_raw(s.addr, "GET", "/key/a/listen", None, "").await;
        assert_eq!(read_head(&mut r).await.unwrap().0, 200);
        held.push(r);
    }
    let r = request(s.addr, "GET", "/key/a/listen", None).await;
    assert_eq!(r.status, 429);
    drop(held.pop());
    assert!(eventually(Duration::from_secs(5), || s.proxy.listen_count() == 2).await);
    let mut r = send_raw(s.addr, "GET", "/key/a/listen", None, "").await;
    assert_eq!(read_head(&mut r).await.unwrap().0, 200);

    opts.limits.streams_per_ip = 100;
    opts.limits.streams = 2;
    let s2 = start_with(opts, MemoryBackend::new()).await;
    let mut a = send_raw(s2.addr, "GET", "/key/a/listen", None, "").await;
    let mut b = send_raw(s2.addr, "GET", "/key/b/listen", None, "").await;
    assert_eq!(read_head(&mut a).await.unwrap().0, 200);
    assert_eq!(read_head(&mut b).await.unwrap().0, 200);
    let r = request(s2.addr, "GET", "/key/c/listen", None).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        request(s2.addr, "GET", "/key/c", None).await.status,
        200,
        "other routes unaffected"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_but_busy_ones_are_not() {
    use tokio::io::AsyncReadExt as _;
    let opts = ProxyOptions {
        timers: fast_timers(),
        idle_timeout: Some(Duration::from_millis(700)),
        ..ProxyOptions::default()
    };
    let s = start_with(opts, MemoryBackend::new()).await;
    // Idle after one request: closed.
    let mut idle = send_raw(s.addr, "GET", "/node/info", None, "").await;
    let (st, h) = read_head(&mut idle).await.unwrap();
    assert_eq!(st, 200);
    let n: usize = h
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut b = vec![0u8; n];
    idle.read_exact(&mut b).await.unwrap();
    // A listen stream as the second request on a keep-alive connection (served by hyper): it
    // stays open while silent, because its response is still in flight.
    let mut busy = send_raw(s.addr, "GET", "/node/info", None, "").await;
    read_head(&mut busy).await.unwrap();
    let mut b = vec![0u8; n];
    busy.read_exact(&mut b).await.unwrap();
    busy.get_mut()
        .write_all(format!("GET /key/{KEY}/listen HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_head(&mut busy).await.unwrap().0, 200);

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "idle connection closed by the server"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.dht
        .inject(key_bytes(KEY), Value::plain(8, 0, b"late".to_vec(), ""));
    assert!(
        String::from_utf8_lossy(&next(&mut busy).await).contains("\"id\":\"8\""),
        "busy stream still open"
    );
}

/// A memory DHT whose gets take their snapshot when called but answer only once the test opens
/// the gate: a DHT get "in flight" across a PUT.
struct GatedGets {
    mem: MemoryBackend,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
}

impl waypost_dht_proxy::backend::DhtBackend for GatedGets {
    fn get(&self, key: [u8; 20]) -> futures_util::stream::BoxStream<'static, Vec<Value>> {
        use futures_util::StreamExt as _;
        let snapshot = self.mem.values(&key);
        let gate = self.gate.clone();
        futures_util::stream::once(async move {
            let _ = gate.acquire().await.map(|p| p.forget());
            snapshot
        })
        .filter(|b| std::future::ready(!b.is_empty()))
        .boxed()
    }
    fn put(
        &self,
        key: [u8; 20],
        value: Value,
        permanent: bool,
    ) -> futures_util::future::BoxFuture<'static, bool> {
        self.mem.put(key, value, permanent)
    }
    fn cancel_put(&self, key: [u8; 20], id: u64) {
        self.mem.cancel_put(key, id);
    }
    fn listen(
        &self,
        key: [u8; 20],
    ) -> futures_util::future::BoxFuture<'static, Option<waypost_dht_proxy::backend::Listen>> {
        self.mem.listen(key)
    }
    fn status(&self) -> waypost_dht_proxy::backend::NodeStatus {
        self.mem.status()
    }
}

/// GETs of one key share DHT gets, but never one that started before them: a GET sent after a
/// PUT was acknowledged sees the value even while an older get of the key is still running.
/// (That concurrent GETs share one get is shown deterministically by the unit tests of
/// `gets`.)
#[tokio::test]
async fn get_after_an_acknowledged_put_sees_it_while_an_older_get_runs() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let shutdown = waypost_net::shutdown::Shutdown::new();
    let proxy = waypost_dht_proxy::Proxy::new(
        std::sync::Arc::new(GatedGets {
            mem: MemoryBackend::new(),
            gate: gate.clone(),
        }),
        ProxyOptions::default(),
        waypost_dht_proxy::metrics::Metrics::default(),
        &shutdown,
    )
    .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(waypost_dht_proxy::serve(
        proxy.clone(),
        waypost_dht_proxy::Listeners {
            http: Some(l),
            tls: None,
        },
        shutdown.clone(),
    ));
    let path = format!("/key/{KEY}");
    let early = tokio::spawn({
        let path = path.clone();
        async move { request(addr, "GET", &path, None).await }
    });
    assert!(eventually(Duration::from_secs(5), || proxy.dht_get_count() == 1).await);
    let r = request(addr, "POST", &path, Some(br#"{"data":"bmV3","id":"77"}"#)).await;
    assert_eq!(r.status, 200);
    let late: Vec<_> = (0..3)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { request(addr, "GET", &path, None).await })
        })
        .collect();
    // They do not join the running get: a new one starts for them (after the running one ends,
    // or here, as it is stuck, after the 20 ms cap).
    assert!(eventually(Duration::from_secs(5), || proxy.dht_get_count() >= 2).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.add_permits(100);
    let early = early.await.unwrap();
    assert_eq!((early.status, early.text()), (200, String::new()));
    for l in late {
        let r = l.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "{\"data\":\"bmV3\",\"id\":\"77\",\"type\":0}\n");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    }
    assert!(proxy.dht_get_count() <= 4);
    shutdown.trigger();
}
