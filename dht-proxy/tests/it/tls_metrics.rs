//! The TLS listener and the Prometheus metrics.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypost_dht_proxy::backend::MemoryBackend;
use waypost_dht_proxy::config::ProxyOptions;
use waypost_dht_proxy::metrics::Metrics;
use waypost_dht_proxy::{Listeners, Proxy};
use waypost_net::admin::Admin;
use waypost_net::shutdown::Shutdown;
use waypost_net::tls::ReloadableTls;

use crate::common::*;

#[tokio::test]
async fn serves_the_same_api_over_tls() {
    let srv = TlsServer::start(ProxyOptions::default()).await;
    let body = br#"{"data":"dGxz","id":"5"}"#;
    let mut s = srv.connect().await;
    let req = format!(
        "POST /key/{KEY} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("{\"data\":\"dGxz\",\"id\":\"5\",\"type\":0}\n"),
        "{text}"
    );
    assert_eq!(srv.dht.values(&key_bytes(KEY)).len(), 1);
    srv.shutdown.trigger();
}

#[tokio::test]
async fn metrics_count_routes_without_identifying_labels() {
    let s = start().await;
    let mut reg = Registry::with_prefix("waypost_dht_proxy");
    s.proxy.metrics().register(&mut reg);
    let admin = Admin::new(reg);
    request(
        s.addr,
        "POST",
        &format!("/key/{KEY}"),
        Some(br#"{"data":"eA=="}"#),
    )
    .await;
    request(s.addr, "POST", &format!("/key/{KEY}"), Some(b"{bad")).await;
    request(s.addr, "GET", &format!("/key/{KEY}"), None).await;
    let mut listen = send_raw(s.addr, "GET", &format!("/key/{KEY}/listen"), None, "").await;
    read_head(&mut listen).await.unwrap();
    request(s.addr, "BREW", "/x", None).await;
    let text = admin.render();
    assert!(
        text.contains("waypost_dht_proxy_requests_total{route=\"Put\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_requests_total{route=\"Get\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_requests_total{route=\"Unknown\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_refused_total{reason=\"BadRequest\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_listen_streams 1"),
        "{text}"
    );
    assert!(
        text.contains("waypost_dht_proxy_dht_gets_total 1"),
        "one GET, one DHT get: {text}"
    );
    assert!(
        !text.contains("127.0.0.1") && !text.contains(KEY),
        "no address or key in metrics"
    );
}

struct TlsServer {
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    dht: MemoryBackend,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(opts: ProxyOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let tls = ReloadableTls::load(&cert, &key, &[b"http/1.1"]).unwrap();
        let shutdown = Shutdown::new();
        let dht = MemoryBackend::new();
        let proxy = Proxy::new(Arc::new(dht.clone()), opts, Metrics::default(), &shutdown).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(waypost_dht_proxy::serve(
            proxy,
            Listeners {
                http: None,
                tls: Some((l, tls)),
            },
            shutdown.clone(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            addr,
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            dht,
            shutdown,
            _dir: dir,
        }
    }

    async fn connect(
        &self,
    ) -> tokio::io::BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio::io::BufReader::new(self.connector.connect(name, tcp).await.unwrap())
    }
}

/// Reads a response head; returns the status and the content length (0 if chunked).
async fn head<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> (u16, usize) {
    use tokio::io::AsyncBufReadExt as _;
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            return (status, len);
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
}

#[tokio::test]
async fn tls_idle_keep_alive_connections_are_closed_but_listen_streams_are_not() {
    use tokio::io::AsyncBufReadExt as _;
    let s = TlsServer::start(ProxyOptions {
        idle_timeout: Some(std::time::Duration::from_millis(700)),
        ..ProxyOptions::default()
    })
    .await;
    // Idle after one request: closed by the server.
    let mut idle = s.connect().await;
    idle.get_mut()
        .write_all(b"GET /node/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (status, len) = head(&mut idle).await;
    assert_eq!(status, 200);
    let mut b = vec![0u8; len];
    idle.read_exact(&mut b).await.unwrap();
    // A listen stream over TLS stays open while silent.
    let mut stream = s.connect().await;
    stream
        .get_mut()
        .write_all(format!("GET /key/{KEY}/listen HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(head(&mut stream).await.0, 200);

    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        idle.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle TLS connection closed by the server"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    s.dht.inject(
        key_bytes(KEY),
        waypost_dht_proxy::value::Value::plain(8, 0, b"late".to_vec(), ""),
    );
    let mut size = String::new();
    stream.read_line(&mut size).await.unwrap();
    let n = usize::from_str_radix(size.trim_end(), 16).unwrap();
    let mut chunk = vec![0u8; n];
    stream.read_exact(&mut chunk).await.unwrap();
    assert!(
        String::from_utf8_lossy(&chunk).contains("\"id\":\"8\""),
        "listen stream still open"
    );
    s.shutdown.trigger();
}
