//! Abuse limits and metrics: body cap, per-source POST rate limit, timeouts, counters.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use waypost_nameserver::config::RateSettings;
use waypost_nameserver::metrics::{Op, Outcome};
use waypost_nameserver::{MemoryStore, Settings};

use crate::common::*;

#[test]
fn oversized_body_is_413_and_server_keeps_serving() {
    let mut settings = Settings::for_tests();
    settings.body_limit = 4096;
    let s = TestServer::start(settings, Arc::new(MemoryStore::new()));
    let big = format!(r#"{{"addr":"{}"}}"#, "a".repeat(8000));
    s.post("/name/alice", big.as_bytes())
        .expect(413, json!({"success": false, "error": "request too large"}));
    // Chunked upload without a length is capped too.
    let mut stream = TcpStream::connect(s.addr).unwrap();
    let mut req = b"POST /name/alice HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"800\r\n");
        req.extend_from_slice(&[b' '; 0x800]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&req).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(&raw).status, 413);
    assert_eq!(s.metrics.get(Op::Register, Outcome::TooLarge), 2);
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));
}

#[test]
fn post_rate_limit_is_per_source_ip() {
    let mut settings = Settings::for_tests();
    settings.post_limit = Some(RateSettings {
        per_minute: 1,
        burst: 2,
        max_entries: 100,
    });
    let s = TestServer::start(settings, Arc::new(MemoryStore::new()));
    assert_eq!(s.post("/name/alice", b"{}").status, 400);
    assert_eq!(s.post("/name/alice", b"{}").status, 400);
    let r = s.post("/name/alice", &reg(key_a(), "alice"));
    r.expect(429, json!({"success": false, "error": "rate limited"}));
    assert!(r.header("retry-after").is_some());
    // GETs are not limited.
    s.get("/name/alice")
        .expect(404, json!({"error": "name not registered"}));
    // Another source address has its own bucket.
    let canary = waypost_tests::canary::Canary::new();
    let stream = canary
        .tcp_connect(s.addr)
        .expect("connect from a loopback alias");
    let r = request_on(
        stream,
        "POST",
        "/name/alice",
        &[("Content-Type", "application/json")],
        Some(&reg(key_a(), "alice")),
    );
    r.expect(200, json!({"success": true}));
    assert_eq!(s.metrics.get(Op::Register, Outcome::RateLimited), 1);
}

#[test]
fn slow_headers_are_cut_off() {
    let mut settings = Settings::for_tests();
    settings.header_timeout = Duration::from_millis(300);
    let s = TestServer::start(settings, Arc::new(MemoryStore::new()));
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /name/alice HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "connection closed by the header timeout"
    );
    // The server still answers others.
    assert_eq!(s.get("/name/alice").status, 404);
}

#[test]
fn slow_body_gets_408() {
    let mut settings = Settings::for_tests();
    settings.request_timeout = Duration::from_millis(300);
    let s = TestServer::start(settings, Arc::new(MemoryStore::new()));
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /name/alice HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let r = parse_response(&raw);
    r.expect(408, json!({"error": "request timeout"}));
    assert_eq!(s.metrics.get(Op::Other, Outcome::Timeout), 1);
}

#[test]
fn counters_by_outcome_with_typed_labels_only() {
    let s = TestServer::memory();
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));
    s.get("/name/alice");
    s.get("/name/nobody");
    s.get("/name/==");
    s.get(&format!("/addr/{}", id(key_a())));
    s.post("/name/alice", &reg(key_b(), "alice"));
    let text = s.metrics_text();
    for line in [
        r#"waypost_nameserver_requests_total{op="Register",outcome="Registered"} 1"#,
        r#"waypost_nameserver_requests_total{op="Register",outcome="NameTaken"} 1"#,
        r#"waypost_nameserver_requests_total{op="Lookup",outcome="Found"} 1"#,
        r#"waypost_nameserver_requests_total{op="Lookup",outcome="NotFound"} 1"#,
        r#"waypost_nameserver_requests_total{op="Lookup",outcome="Invalid"} 1"#,
        r#"waypost_nameserver_requests_total{op="Reverse",outcome="Found"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("alice") && !text.contains("127.0.0.1") && !text.contains(&id(key_a())));
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let mut settings = Settings::for_tests();
    settings.idle_timeout = Duration::from_millis(300);
    let s = TestServer::start(settings, Arc::new(MemoryStore::new()));
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /name/alice HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let mut raw = Vec::new();
    // Keep-alive: the read ends only when the server closes the idle connection.
    let _ = stream.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 404);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

/// Bad input of many shapes gets a JSON error and never takes the server down (bounded loop,
/// deterministic pseudo-random input).
#[test]
fn garbage_requests_get_json_errors_and_the_server_keeps_serving() {
    let s = TestServer::memory();
    s.post("/name/alice", &reg(key_a(), "alice"))
        .expect(200, json!({"success": true}));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces = [
        "",
        "/",
        "%",
        "%zz",
        "%00",
        "..",
        "name",
        "addr",
        "alice",
        "ALICE",
        "é",
        "%C3%A9",
        "0x",
        "ring:",
        "a;b",
        "publickey",
        "signature",
        "~",
        "%2F",
        "aa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    let bodies: [&[u8]; 8] = [
        b"",
        b"{",
        b"null",
        b"{\"addr\":5,\"owner\":[],\"publickey\":{},\"signature\":true}",
        b"{\"addr\":\"0x0\",\"owner\":\"0x0\"}",
        b"\xff\xfe\x00",
        b"{\"addr\":\"1111111111111111111111111111111111111111\",\"owner\":\"2222222222222222222222222222222222222222\",\"publickey\":\"!!\",\"signature\":\"@@\"}",
        b"[{}]",
    ];
    for _ in 0..300 {
        let n = (next() % 4) as usize + 1;
        let mut path = String::new();
        for _ in 0..n {
            path.push('/');
            path.push_str(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let method = ["GET", "POST", "HEAD", "PUT"][(next() % 4) as usize];
        let body = bodies[(next() % bodies.len() as u64) as usize];
        let r = request(
            s.addr,
            method,
            &path,
            if method == "POST" { Some(body) } else { None },
        );
        assert!(
            matches!(r.status, 200 | 400 | 401 | 403 | 404 | 405 | 409),
            "{method} {path}: {}",
            r.status
        );
        if method != "HEAD" {
            assert!(r.json().is_object(), "{method} {path}");
        }
    }
    s.get("/name/alice").expect(
        200,
        json!({"name": "alice", "addr": format!("0x{}", id(key_a())), "publickey": pk(key_a()),
               "signature": s.get("/name/alice/signature").json()["signature"]}),
    );
}

/// hyper applies the header timeout to the wait for the next request on a keep-alive
/// connection too, so an idle connection is closed after min(idle, header) timeout.
#[test]
fn header_timeout_also_bounds_idle_keep_alive() {
    let mut settings = Settings::for_tests();
    settings.idle_timeout = Duration::from_secs(4);
    settings.header_timeout = Duration::from_millis(300);
    let s = TestServer::start(settings, Arc::new(MemoryStore::new()));
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /name/alice HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 404);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

/// A store that takes longer than any request may.
struct StuckStore;

impl waypost_nameserver::store::NameStore for StuckStore {
    fn get_by_name(
        &self,
        _: &str,
    ) -> Result<Option<waypost_nameserver::store::Record>, waypost_nameserver::store::StoreError>
    {
        std::thread::sleep(Duration::from_secs(2));
        Ok(None)
    }
    fn get_by_addr(
        &self,
        _: &waypost_protocol::identity::JamiId,
    ) -> Result<Option<String>, waypost_nameserver::store::StoreError> {
        std::thread::sleep(Duration::from_secs(2));
        Ok(None)
    }
    fn claim(
        &self,
        _: &waypost_nameserver::store::Record,
    ) -> Result<waypost_nameserver::store::Claim, waypost_nameserver::store::StoreError> {
        std::thread::sleep(Duration::from_secs(2));
        Err(waypost_nameserver::store::StoreError::Unavailable)
    }
}

#[test]
fn a_stuck_store_answers_503_never_4xx() {
    // A 4xx on a lookup makes Jami show the name as free; a slow store must say 503 instead.
    let mut settings = Settings::for_tests();
    settings.request_timeout = Duration::from_millis(400);
    let s = TestServer::start(settings, Arc::new(StuckStore));
    let r = request_on(
        TcpStream::connect(s.addr).unwrap(),
        "GET",
        "/name/alice",
        &[],
        None,
    );
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let addr = format!("/addr/{}", "ab".repeat(20));
    let r = request_on(TcpStream::connect(s.addr).unwrap(), "GET", &addr, &[], None);
    assert_eq!(r.status, 503);
}
