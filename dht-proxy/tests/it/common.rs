//! Test harness: the real proxy in-process on 127.0.0.1:0, a raw HTTP/1.1 client that shows
//! the bytes on the wire, and a recording HTTP receiver standing in for push gateways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use waypost_dht_proxy::backend::MemoryBackend;
use waypost_dht_proxy::config::{ProxyOptions, Timers};
use waypost_dht_proxy::metrics::Metrics;
use waypost_dht_proxy::{Listeners, Proxy};
use waypost_net::shutdown::Shutdown;

pub struct Server {
    pub addr: SocketAddr,
    pub proxy: Proxy,
    pub dht: MemoryBackend,
    pub shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn fast_timers() -> Timers {
    Timers {
        push_backoff: Duration::from_millis(50),
        sweep: Duration::from_millis(100),
        ..Timers::default()
    }
}

pub async fn start_with(opts: ProxyOptions, dht: MemoryBackend) -> Server {
    let shutdown = Shutdown::new();
    let metrics = Metrics::default();
    let proxy = Proxy::new(Arc::new(dht.clone()), opts, metrics.clone(), &shutdown).expect("proxy");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let listeners = Listeners {
        http: Some(l),
        tls: None,
    };
    tokio::spawn(waypost_dht_proxy::serve(
        proxy.clone(),
        listeners,
        shutdown.clone(),
    ));
    Server {
        addr,
        proxy,
        dht,
        shutdown,
    }
}

pub async fn start() -> Server {
    let opts = ProxyOptions {
        timers: fast_timers(),
        ..ProxyOptions::default()
    };
    start_with(opts, MemoryBackend::new()).await
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Decoded body.
    pub body: Vec<u8>,
    /// Raw chunks (if chunked).
    pub chunks: Vec<Vec<u8>>,
    pub chunked: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

pub async fn read_head(r: &mut BufReader<TcpStream>) -> Option<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Some((status, headers))
}

/// Reads one chunk; `None` at the terminating zero chunk or EOF.
pub async fn read_chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(line.trim_end(), 16).ok()?;
    let mut buf = vec![0u8; n + 2];
    r.read_exact(&mut buf).await.ok()?;
    assert_eq!(&buf[n..], b"\r\n", "chunk must end with CRLF");
    buf.truncate(n);
    if n == 0 { None } else { Some(buf) }
}

pub async fn send_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    extra: &str,
) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\nContent-Type: application/json\r\n{extra}"
    );
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    if let Some(b) = body {
        s.write_all(b).await.unwrap();
    }
    BufReader::new(s)
}

/// One request with `Connection: close`; reads the whole response.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut r = send_raw(addr, method, path, body, "Connection: close\r\n").await;
        let (status, headers) = read_head(&mut r).await.expect("response head");
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let mut out = Resp {
            status,
            headers,
            body: vec![],
            chunks: vec![],
            chunked,
        };
        if chunked {
            while let Some(c) = read_chunk(&mut r).await {
                out.body.extend_from_slice(&c);
                out.chunks.push(c);
            }
        } else if let Some(n) = out
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            let mut b = vec![0u8; n];
            r.read_exact(&mut b).await.unwrap();
            out.body = b;
        } else {
            r.read_to_end(&mut out.body).await.unwrap();
        }
        out
    })
    .await
    .expect("request timed out")
}

/// A recorded HTTP request.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub raw: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on 127.0.0.1:0 recording every request; answers with the queued statuses
/// (then 200).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Recorded>>>,
    pub statuses: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let me = Self {
            addr,
            got: Arc::default(),
            statuses: Arc::default(),
        };
        let m = me.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or_default().to_owned();
                        let path = parts.next().unwrap_or_default().to_owned();
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.push((k.trim().to_owned(), v.trim().to_owned()));
                            }
                        }
                        let n = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        let mut b = vec![0u8; n];
                        if r.read_exact(&mut b).await.is_err() {
                            return;
                        }
                        let body = serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null);
                        let status = {
                            let mut st = m.statuses.lock();
                            if st.is_empty() { 200 } else { st.remove(0) }
                        };
                        m.got.lock().push(Recorded {
                            method,
                            path,
                            headers,
                            body,
                            raw: b,
                        });
                        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{{}}");
                        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        me
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.got.lock().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

pub const KEY: &str = "913a73b565c8e2c8ed94497580f619397709b8b6";

pub fn key_bytes(h: &str) -> [u8; 20] {
    let mut k = [0u8; 20];
    hex::decode_to_slice(h, &mut k).unwrap();
    k
}

/// A value signed with a fresh RSA-2048 key.
pub fn signed_value(id: u64, data: &[u8]) -> waypost_dht_proxy::value::Value {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA512, RsaKeyPair};
    use waypost_dht_proxy::value::{Body, Signed, Value};
    let kp = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let owner = kp.public_key().as_der().unwrap().as_ref().to_vec();
    let mut v = Value {
        id,
        body: Body::Plain {
            type_id: 0,
            data: data.to_vec(),
            user_type: String::new(),
            signed: Some(Signed {
                seq: 0,
                owner,
                to: None,
                sig: vec![],
            }),
        },
        priority: 0,
        push_type: String::new(),
    };
    let msg = v.to_sign_bytes();
    let mut sig = vec![0u8; kp.public_modulus_len()];
    kp.sign(
        &RSA_PKCS1_SHA512,
        &aws_lc_rs::rand::SystemRandom::new(),
        &msg,
        &mut sig,
    )
    .unwrap();
    if let Body::Plain {
        signed: Some(s), ..
    } = &mut v.body
    {
        s.sig = sig;
    }
    v
}
