//! Shared test support: cached RSA-4096 identities, an in-process server, a raw HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::Value;
use waypost_nameserver::{Metrics, NameStore, Settings};
use waypost_net::shutdown::Shutdown;
use waypost_protocol::identity::{Identity, KeyBits};

/// The two RSA-4096 identities A and B of spec §6, generated once per test binary (in parallel).
pub(crate) fn keys() -> &'static (Identity, Identity) {
    static KEYS: OnceLock<(Identity, Identity)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let b = std::thread::spawn(|| Identity::generate(KeyBits::Rsa4096).expect("keygen B"));
        let a = Identity::generate(KeyBits::Rsa4096).expect("keygen A");
        (a, b.join().expect("keygen thread"))
    })
}

pub(crate) fn key_a() -> &'static Identity {
    &keys().0
}

pub(crate) fn key_b() -> &'static Identity {
    &keys().1
}

/// `ID_X`: 40 lowercase hex digits.
pub(crate) fn id(k: &Identity) -> String {
    k.id().to_hex()
}

/// `PK_X`: base64 of PEM followed by a NUL byte, as clients before 2026-08 send it.
pub(crate) fn pk(k: &Identity) -> String {
    k.public_key().to_base64_field(true)
}

/// `SIG_X(n)`.
pub(crate) fn sig(k: &Identity, name: &str) -> String {
    k.sign_base64(name.as_bytes()).expect("sign")
}

/// 40 random hex digits.
pub(crate) fn random_owner() -> String {
    use rand::{RngCore, SeedableRng};
    let mut b = [0u8; 20];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A registration body formatted like jami-daemon builds it.
pub(crate) fn body(addr: &str, owner: &str, signature: &str, publickey: &str) -> Vec<u8> {
    format!(r#"{{"addr":"{addr}","owner":"{owner}","signature":"{signature}","publickey":"{publickey}"}}"#)
        .into_bytes()
}

/// The full, valid registration of `name` by `k`.
pub(crate) fn reg(k: &Identity, name: &str) -> Vec<u8> {
    body(&id(k), &random_owner(), &sig(k, name), &pk(k))
}

/// A response as read off the wire.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts status and exact JSON body.
    pub(crate) fn expect(&self, status: u16, body: Value) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.json(), body);
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

/// Sends one request on `stream` (with `Connection: close`) and reads the whole response.
pub(crate) fn request_on(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    stream.write_all(&bytes).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

pub(crate) fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .expect("status")
        .parse()
        .expect("numeric status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A request as jami-daemon sends it: `Content-Type: application/json` on every request.
pub(crate) fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    let stream = TcpStream::connect(addr).expect("connect");
    let headers = [
        ("Content-Type", "application/json"),
        ("Accept", "*/*"),
        ("User-Agent", "Jami (test/x86_64)"),
    ];
    request_on(stream, method, path, &headers, body)
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, None)
}

pub(crate) fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Resp {
    request(addr, "POST", path, Some(body))
}

/// The name server running in-process on 127.0.0.1:0 with its own runtime.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: Metrics,
    pub(crate) registry: Arc<parking_lot::Mutex<Registry>>,
    shutdown: Shutdown,
    runtime: Option<tokio::runtime::Runtime>,
    /// Whatever the backend needs alive until the server has stopped (e.g. a local chain).
    guard: Option<Box<dyn std::any::Any + Send>>,
}

impl TestServer {
    pub(crate) fn start(settings: Settings, store: Arc<dyn NameStore>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut registry = Registry::with_prefix("waypost");
        let metrics = Metrics::register(&mut registry);
        let shutdown = Shutdown::new();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(waypost_nameserver::run(
            settings,
            listener,
            store,
            metrics.clone(),
            shutdown.clone(),
        ));
        Self {
            addr,
            metrics,
            registry: Arc::new(parking_lot::Mutex::new(registry)),
            shutdown,
            runtime: Some(runtime),
            guard: None,
        }
    }

    /// Keeps `guard` alive until this server has shut down.
    #[cfg_attr(not(feature = "eth"), allow(dead_code))]
    pub(crate) fn with_guard(mut self, guard: impl std::any::Any + Send) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// Default test settings and an empty in-memory store.
    pub(crate) fn memory() -> Self {
        Self::start(
            Settings::for_tests(),
            Arc::new(waypost_nameserver::MemoryStore::new()),
        )
    }

    pub(crate) fn get(&self, path: &str) -> Resp {
        get(self.addr, path)
    }

    pub(crate) fn post(&self, path: &str, body: &[u8]) -> Resp {
        post(self.addr, path, body)
    }

    pub(crate) fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()).expect("encode");
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        drop(self.guard.take());
    }
}
